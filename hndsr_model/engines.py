"""Where the neural operator runs: PyTorch eager, or a graph in ONNX Runtime.

The operator is most of a request's time (the diffusion steps and the uncertainty head stay in PyTorch). An
inference engine runs it as one optimised graph instead of PyTorch's 287 operators one after another, and
releases the GIL for the whole forward. ``auto`` picks, per device, the fastest that keeps the output within
one grey level of PyTorch's (``python -m benchmarks speed`` measures them side by side, OpenVINO and
TorchInductor too): ONNX Runtime on the CPU when it is installed, PyTorch on a GPU. A named engine that cannot
run is an error, not a quiet fallback; ``auto`` says which one it took (``/version``, the server's log).

A graph is made for one scale and one square tile (the pipeline's tile size), with any batch: the operator's
spectral bases are constants of the graph. Tiles of another shape (an image smaller than a tile, where every
tile has its shape) run in PyTorch. Graphs are built once per weights checksum, scale and tile, kept beside
the weights (``onnx/``, as ``python -m hndsr_service.model_store`` stores them for a Bento) or in the user's
cache (``$XDG_CACHE_HOME/hndsr/onnx``), never per request: the service builds every scale's at start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from .export import INPUT_NAME, TileSuperResolver, export_graph, save_atomically
from .options import ENGINES
from .weights import LoadedModel

GRAPH_FOLDER = "onnx"  # beside the weights
# Part of every graph's name: bumped whenever hndsr_model.export makes a different graph of the same weights,
# so that no cache serves a graph of an earlier form.
GRAPH_FORMAT = 2
GraphRun = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class EngineUnavailable(RuntimeError):
    """The engine asked for cannot run here (not installed, or not for this device)."""


class TorchEngine:
    """PyTorch eager: every shape, every device; what the graphs are checked against."""

    name = "torch"

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def prepare(self, scales: Iterable[int]) -> None:
        """Build what the scales need before the first request (nothing, in eager mode)."""

    def __call__(self, lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, h, w)`` in 0..1 -> the output ``(N, 3, s*h, s*w)`` (unclamped) and the LR features."""
        features = self.model.operator.forward_features(lr, scale)
        return self.model.operator.decode(lr, features, scale), features


class GraphEngine(TorchEngine):
    """An exported graph per scale for ``tile x tile`` inputs; other shapes in PyTorch."""

    def __init__(self, model: LoadedModel, tile: int) -> None:
        super().__init__(model)
        self.tile = tile
        self._runs: dict[int, GraphRun] = {}
        self._lock = threading.Lock()

    def prepare(self, scales: Iterable[int]) -> None:
        for scale in scales:
            self._run(scale)

    def __call__(self, lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        if lr.shape[-2:] != (self.tile, self.tile):
            return super().__call__(lr, scale)
        sr, features = self._run(scale)(lr.contiguous().numpy())
        return torch.from_numpy(sr), torch.from_numpy(features)

    def _run(self, scale: int) -> GraphRun:
        with self._lock:  # one build per scale, however many requests ask at once
            if scale not in self._runs:
                self._runs[scale] = self._load(graph_file(self.model, scale, self.tile))
            return self._runs[scale]

    def _load(self, path: Path) -> GraphRun:
        raise NotImplementedError


class OnnxRuntimeEngine(GraphEngine):
    name = "onnxruntime"

    def _load(self, path: Path) -> GraphRun:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()  # the service's THREADS, as PyTorch's
        # No arena: it keeps every session's largest run for good (3.8 GB after a batch of 4 tiles at each scale,
        # against 53 MB without it once the heap is trimmed), and the service trims its heap when idle.
        options.enable_cpu_mem_arena = False
        # Idle pool threads would spin for work between tiles, taking the event loop's and the I/O's cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda lr: tuple(session.run(None, {INPUT_NAME: lr}))


def make_engine(name: str, model: LoadedModel, device: torch.device, tile: int) -> TorchEngine:
    """The engine ``name`` (one of :data:`ENGINES`) for ``model`` on ``device``; raises EngineUnavailable."""
    if name not in ENGINES:
        raise EngineUnavailable(f"inference engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "auto":
        name = "onnxruntime" if device.type == "cpu" and _installed("onnxruntime") else "torch"
    if name == "torch":
        return TorchEngine(model)
    if device.type != "cpu":
        raise EngineUnavailable(f"the {name} engine runs on the CPU here; use torch (or auto) on {device.type}")
    if not _installed(name):
        raise EngineUnavailable(f"the {name} engine is not installed (pip install -e . installs it)")
    return OnnxRuntimeEngine(model, tile)


def graph_name(model: LoadedModel, scale: int, tile: int) -> str:
    return f"operator-{model.sha256[:16]}-x{scale}-t{tile}-g{GRAPH_FORMAT}.onnx"


def graph_file(model: LoadedModel, scale: int, tile: int) -> Path:
    """The engine graph of ``model`` for ``scale`` and ``tile``: beside the weights or in the user's cache, else
    built into the cache (seconds; once per weights, scale and tile on this machine)."""
    name = graph_name(model, scale, tile)
    folders = ([model.path.parent / GRAPH_FOLDER] if model.path else []) + [user_cache()]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    module = TileSuperResolver(model.operator, scale, tile, with_features=True)
    return save_atomically(export_graph(module, tile, ["sr", "features"], batch=None), user_cache() / name)


def user_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "hndsr" / GRAPH_FOLDER


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
