"""A scene product's checkpoints: the writes of one tile row, kept so that another process can replay them.

A scene job writes its product one tile row of the model at a time (:meth:`SceneUpscaler.steps`). With
recording on, every write of a row (pixels and masks, into the product and into a map of its own) is
kept in a :class:`RowWrites`, whose bytes the caller stores where any replica can read them. A process that
resumes the job replays the finished rows into a fresh working file and computes only the rest, so the
product's pixels are those of an uninterrupted run.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
from rasterio.io import DatasetWriter
from rasterio.windows import Window

PRODUCT, MAP = "product", "map"  # the datasets a row writes into: the product, and a map of its own


@dataclass(frozen=True)
class _Write:
    target: str  # PRODUCT or MAP
    indexes: tuple[int, ...]  # bands; () for the dataset's mask
    row_off: int  # the window's first row; windows span the whole width
    values: np.ndarray


@dataclass
class RowWrites:
    """The writes of one tile row, in order."""

    writes: list[_Write] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        header = [{"target": w.target, "indexes": list(w.indexes), "row_off": w.row_off} for w in self.writes]
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                            **{f"w{i}": w.values for i, w in enumerate(self.writes)})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RowWrites:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            header = json.loads(arrays["header"].tobytes())
            return cls([_Write(h["target"], tuple(h["indexes"]), h["row_off"], arrays[f"w{i}"])
                        for i, h in enumerate(header)])

    def replay(self, writers: dict[str, RecordingWriter]) -> None:
        for write in self.writes:
            writers[write.target].write_values(write.indexes, write.row_off, write.values)


class RecordingWriter:
    """Writes into a dataset by whole-width windows and, while :attr:`log` is set, records each write there."""

    def __init__(self, dataset: DatasetWriter, target: str) -> None:
        self.dataset = dataset
        self.target = target
        self.log: RowWrites | None = None

    @property
    def dtypes(self) -> tuple[str, ...]:
        return self.dataset.dtypes

    def write(self, values: np.ndarray, indexes: list[int], window: Window) -> None:
        self.write_values(tuple(indexes), int(window.row_off), values)

    def write_mask(self, mask: np.ndarray, window: Window) -> None:
        self.write_values((), int(window.row_off), mask)

    def write_values(self, indexes: tuple[int, ...], row_off: int, values: np.ndarray) -> None:
        window = Window(0, row_off, self.dataset.width, values.shape[-2])
        if indexes:
            self.dataset.write(values, indexes=list(indexes), window=window)
        else:
            self.dataset.write_mask(values, window=window)
        if self.log is not None:
            self.log.writes.append(_Write(self.target, indexes, row_off, values))
