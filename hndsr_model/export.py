"""The neural operator as a self-contained ONNX model: one scale, one square tile, RGB in 0..1 in and out.

What ONNX Runtime alone runs, with nothing of HNDSR installed, and what QGIS's Deepness plugin loads as a
super-resolution model: one input ``(1, 3, T, T)`` float32 RGB in 0..1, one output ``(1, 3, T*S, T*S)`` in
0..1, and the plugin's metadata (``model_type``, ``resolution``, ``tile_size``, ``tiles_overlap``) with
JSON-encoded values. Batch 1 is fixed because Deepness refuses any other output batch.

ONNX has no complex tensors, so the spectral mixing's DFTs are written here in real arithmetic for the one
tile size the file is made for (its bases become constants of the graph); the scale's conditioning and the
decoder's kernels fold into constants the same way. The output stays within one grey level of the
service's for the same tile (``tests/unit/test_export.py``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .consistency import cubic, project
from .operator import NeuralOperatorSR, SpectralMixing, spectral_bases
from .options import (
    DEFAULT_CONSISTENCY,
    DEFAULT_EXPORT_OVERLAP_PERCENT,
    DEFAULT_EXPORT_RESOLUTION_CM,
    DEFAULT_TILE_SIZE,
    DEFAULT_VARIANT,
    SCALES,
)
from .weights import LoadedModel

if TYPE_CHECKING:
    import onnx

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "lr", "sr"


@dataclass(frozen=True)
class ExportSpec:
    """What one ONNX file is made for: the scale, the square LR tile side and Deepness's tile overlap."""

    scale: int
    tile: int = DEFAULT_TILE_SIZE
    overlap_percent: int = DEFAULT_EXPORT_OVERLAP_PERCENT  # Deepness's tiles_overlap
    resolution_cm: float = DEFAULT_EXPORT_RESOLUTION_CM
    model: str = DEFAULT_VARIANT
    consistency: bool = DEFAULT_CONSISTENCY  # the LR-consistency projection inside the graph (per tile, as served)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be in {SCALES.start}..{SCALES.stop - 1}, got {self.scale}")
        if not 32 <= self.tile <= 1024:
            raise ValueError(f"tile must be in 32..1024, got {self.tile}")
        if not 0 <= self.overlap_percent < 50:
            raise ValueError(f"overlap_percent must be in 0..49, got {self.overlap_percent}")
        if not self.resolution_cm > 0:
            raise ValueError(f"resolution_cm must be positive, got {self.resolution_cm}")


class RealSpectralMixing(nn.Module):
    """:class:`SpectralMixing` for one ``height x width``, in real arithmetic: the same numbers, no complex ops.

    With ``F = Fr + i Fi`` the retained rows of the DFT along H and ``G = Gr + i Gi`` along W, the layer is
    ``Re(G^T . F^H (w * (F (x G^T))))`` over the retained modes; each complex product is expanded into real ones.
    """

    def __init__(self, layer: SpectralMixing, height: int, width: int) -> None:
        super().__init__()
        rows, cols = min(layer.modes, height // 2), min(layer.modes, width // 2 + 1)
        fh, fw, inverse = spectral_bases(height, width, rows, cols, torch.device("cpu"))
        weight = torch.view_as_complex(layer.weight.detach().contiguous())
        weight = torch.cat([weight[:, :rows, :cols], weight[:, weight.shape[1] - rows:, :cols]], dim=1) * inverse
        for name, value in (("fh_re", fh.real), ("fh_im", fh.imag), ("fw_re", fw.real), ("fw_im", fw.imag),
                            ("w_re", weight.real), ("w_im", weight.imag)):
            self.register_buffer(name, value.float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half_re, half_im = x @ self.fw_re.T, x @ self.fw_im.T  # (B, C, H, c)
        spec_re = self.fh_re @ half_re - self.fh_im @ half_im  # (B, C, 2r, c)
        spec_im = self.fh_re @ half_im + self.fh_im @ half_re
        mixed_re = spec_re * self.w_re - spec_im * self.w_im
        mixed_im = spec_re * self.w_im + spec_im * self.w_re
        back_re = self.fh_re.T @ mixed_re + self.fh_im.T @ mixed_im  # conj(F)^T . mixed
        back_im = self.fh_re.T @ mixed_im - self.fh_im.T @ mixed_re
        return back_re @ self.fw_re + back_im @ self.fw_im


class BicubicAsConvolution(nn.Module):
    """``F.interpolate(x, scale_factor=s, mode="bicubic")`` (half-pixel centres, a = -0.75, edges replicated) as
    PyTorch computes it, written as a fixed depthwise 5x5 convolution to ``s * s`` phases and a pixel shuffle.

    An integer upscale samples every input pixel at the same ``s`` sub-pixel phases, so the cubic weights are
    constants: ONNX Runtime's generic cubic ``Resize`` took 53 % of the graph's time, the convolution a few %.
    """

    def __init__(self, scale: int, channels: int = 3) -> None:
        super().__init__()
        phases = torch.zeros(scale, 5, dtype=torch.float64)  # weights on the input offsets -2..2, per phase
        for phase in range(scale):
            source = (phase + 0.5) / scale - 0.5
            first = math.floor(source)
            for tap in range(-1, 3):
                phases[phase, first + tap + 2] += cubic(first + tap - source)
        kernels = (phases[:, None, :, None] * phases[None, :, None, :]).reshape(scale * scale, 1, 5, 5)
        self.register_buffer("weight", kernels.repeat(channels, 1, 1, 1).float())
        self.scale, self.channels = scale, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phased = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.weight, groups=self.channels)
        return F.pixel_shuffle(phased, self.scale)


class TileSuperResolver(nn.Module):
    """The operator for one scale and one ``tile x tile`` input, ``(N, 3, T, T) -> (N, 3, T*S, T*S)``.

    ``with_features=False`` (the product): the output clamped to 0..1, as the service clamps before it rounds.
    ``with_features=True`` (the service's engine graphs): the unclamped output and the LR features that the
    uncertainty head reads, ``(N, C, T, T)``, as :meth:`NeuralOperatorSR.forward_features` and ``decode`` give.
    ``consistency``: the output projected onto the tile's block means (:mod:`.consistency`), for a product that
    others tile (the service's engines leave it to the pipeline, which projects whatever engine ran).
    """

    def __init__(self, operator: NeuralOperatorSR, scale: int, tile: int, with_features: bool = False,
                 consistency: bool = False) -> None:
        super().__init__()
        self.operator = copy.deepcopy(operator).cpu().float().eval()
        self.scale = scale
        self.with_features = with_features
        self.consistency = consistency
        for block in self.operator.body:
            if block.spectral is not None:  # v3 without spectral mixing has none
                block.spectral = RealSpectralMixing(block.spectral, tile, tile)
        self.bicubic = BicubicAsConvolution(scale)
        self.eval()

    def forward(self, lr: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        features = self.operator.forward_features(lr, self.scale)
        # NeuralOperatorSR.decode, with its bicubic upsampling as a convolution
        sr = self.bicubic(lr) + self.operator.decoder(features, self.scale)
        if self.consistency:
            sr = project(sr, lr, self.scale, upsampling=self.bicubic)
        return (sr, features) if self.with_features else sr.clamp(0, 1)


def export_graph(module: TileSuperResolver, tile: int, outputs: list[str], batch: int | None) -> onnx.ModelProto:
    """Trace ``module`` for ``(batch, 3, tile, tile)`` inputs (``batch=None``: any batch) into a checked ONNX model."""
    import onnx

    example = torch.rand(batch or 2, 3, tile, tile)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=256)},)
    with torch.inference_mode(False), torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(module, (example,), input_names=[INPUT_NAME], output_names=outputs,
                                    opset_version=OPSET, dynamo=True, dynamic_shapes=dynamic, verbose=False)
    onnx.checker.check_model(program.model_proto)
    return program.model_proto


def save_atomically(proto: onnx.ModelProto, path: Path) -> Path:
    """Write ``proto`` (weights inside) so that ``path`` never holds half a model, whoever else writes it too."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        onnx.save_model(proto, partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def deepness_metadata(spec: ExportSpec, model_version: str) -> dict[str, str]:
    """The file's custom metadata: Deepness's keys (values JSON-encoded, as it reads them) and HNDSR's."""
    values = {
        "model_type": "Superresolution",
        "resolution": spec.resolution_cm,
        "tile_size": spec.tile,
        "tiles_overlap": spec.overlap_percent,
        "scale": spec.scale,
        "hndsr_model": spec.model,
        "hndsr_version": model_version,
        "hndsr_consistency": spec.consistency,
        "input": "RGB float32 in 0..1, NCHW",
        "output": "RGB float32 in 0..1, NCHW, scale times the input's side",
    }
    return {key: json.dumps(value) for key, value in values.items()}


def export_onnx(model: LoadedModel, spec: ExportSpec, path: Path) -> Path:
    """Write the operator of ``model`` for ``spec`` to ``path``: the product, batch 1, with Deepness's metadata."""
    module = TileSuperResolver(model.operator, spec.scale, spec.tile, consistency=spec.consistency)
    proto = export_graph(module, spec.tile, [OUTPUT_NAME], batch=1)
    for key, value in deepness_metadata(spec, model.version).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (f"HNDSR {model.version} ({spec.model} weights): x{spec.scale} super-resolution of a "
                        f"{spec.tile}x{spec.tile} RGB tile")
    return save_atomically(proto, path)


def max_grey_difference(model: LoadedModel, spec: ExportSpec, path: Path, tiles: torch.Tensor | None = None) -> int:
    """The largest difference, in grey levels of 8-bit output, between ONNX Runtime running ``path`` and PyTorch
    running ``model`` on ``tiles`` (``(N, 3, T, T)`` in 0..1; default: two seeded random tiles)."""
    import numpy as np
    import onnxruntime

    if tiles is None:
        tiles = torch.rand(2, 3, spec.tile, spec.tile, generator=torch.Generator().manual_seed(0))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    device = next(model.operator.parameters()).device  # the model stays where it is
    with torch.inference_mode():
        on_device = tiles.to(device)
        expected = model.operator(on_device, spec.scale)
        if spec.consistency:
            expected = project(expected, on_device, spec.scale)
        expected = expected.clamp(0, 1).cpu().numpy()
    got = np.concatenate([session.run(None, {INPUT_NAME: tile[None].numpy()})[0] for tile in tiles])
    return int(np.abs(np.rint(got * 255) - np.rint(expected * 255)).max())


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about what does not concern this graph (torchvision's ops it skips, each
    multi-output op its optimiser leaves alone, its own deprecations): noise to a user. Errors still raise."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
