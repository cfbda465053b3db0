"""Which source bands go through the model, and how.

The network is a colour model: three bands that form red, green and blue go through it together; any
other band goes through it alone (repeated to grey, the output's channel mean kept); an alpha band is a
mask, not an intensity, so it is carried over by nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rasterio.enums import ColorInterp

GroupKind = Literal["rgb", "mono", "nearest"]
RGB = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)


@dataclass(frozen=True)
class BandGroup:
    kind: GroupKind
    source: tuple[int, ...]  # 1-based band numbers in the input
    target: tuple[int, ...]  # 1-based band numbers in the output


@dataclass(frozen=True)
class BandPlan:
    source: tuple[int, ...]  # the input bands that become output bands 1..n, in order
    groups: tuple[BandGroup, ...]

    @classmethod
    def build(cls, count: int, colorinterp: tuple[ColorInterp, ...], bands: tuple[int, ...] | None) -> BandPlan:
        """Raises ValueError when ``bands`` names a band the raster does not have."""
        selected = bands or tuple(range(1, count + 1))
        if max(selected) > count:
            raise ValueError(f"bands {','.join(map(str, selected))} asks for band {max(selected)}, "
                             f"but the raster has {count} band{'s' if count > 1 else ''}")
        position = {band: i + 1 for i, band in enumerate(selected)}
        interp = {band: colorinterp[band - 1] for band in selected}
        alpha = [b for b in selected if interp[b] == ColorInterp.alpha]
        rest = [b for b in selected if b not in alpha]
        colour = _colour_triplet(rest, interp)
        groups = [BandGroup("rgb", colour, tuple(position[b] for b in colour))] if colour else []
        groups += [BandGroup("mono", (b,), (position[b],)) for b in rest if b not in colour]
        groups += [BandGroup("nearest", (b,), (position[b],)) for b in alpha]
        return cls(selected, tuple(groups))

    @property
    def model_passes(self) -> int:
        return sum(group.kind != "nearest" for group in self.groups)

    @property
    def model_bands(self) -> tuple[int, ...]:
        """The source bands the model sees (an alpha band is copied by nearest neighbour instead)."""
        return tuple(b for group in self.groups if group.kind != "nearest" for b in group.source)


def _colour_triplet(bands: list[int], interp: dict[int, ColorInterp]) -> tuple[int, ...]:
    """Three bands are a colour image; among more, the ones labelled red, green and blue (if all are)."""
    if len(bands) == 3:
        return tuple(bands)
    by_interp = {interp[b]: b for b in bands}
    if len(bands) > 3 and all(c in by_interp for c in RGB):
        return tuple(by_interp[c] for c in RGB)
    return ()
