"""The inference engine keeps the output: ONNX Runtime within one grey level of PyTorch at every scale, the
shapes a graph is not made for run in PyTorch, graphs are built once and found beside the weights first, a run
keeps no memory, and a named engine that cannot run says so."""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hndsr_model import engines
from hndsr_model.engines import EngineUnavailable, GraphEngine, TorchEngine, graph_file, graph_name, make_engine
from hndsr_model.options import DEFAULT_TILE_SIZE, SCALES, UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import LoadedModel, load_weights
from tests.helpers import DATA, requires_data, rgb_image

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_weights()


def val_tiles(count: int, side: int = DEFAULT_TILE_SIZE) -> torch.Tensor:
    """``count`` crops of held-out RSSCN7 images (the engines were never tuned on them), ``(N, 3, side, side)``."""
    paths = sorted((DATA / "rsscn7" / "val").rglob("*.jpg"))[::29][:count]  # different classes
    crops = [np.asarray(Image.open(p).convert("RGB"))[:side, :side] for p in paths]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255)


@pytest.fixture(scope="module")
def torch_reference(model: LoadedModel) -> Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Two held-out tiles and PyTorch's output and features for them at a scale, made once for all engines."""
    tiles = val_tiles(2)

    @functools.cache
    def at(scale: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return (tiles, *TorchEngine(model)(tiles, scale))

    return at


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return np.abs(np.rint(a.clamp(0, 1).numpy() * 255) - np.rint(b.clamp(0, 1).numpy() * 255))


@requires_data("rsscn7", "val")
@pytest.mark.parametrize("scale", SCALES)
def test_onnx_runtime_is_within_one_grey_level_of_pytorch_at_every_scale(model: LoadedModel, torch_reference,
                                                                          scale: int) -> None:
    engine = make_engine("onnxruntime", model, CPU, DEFAULT_TILE_SIZE)
    tiles, expected_sr, expected_features = torch_reference(scale)
    with torch.inference_mode():
        sr, features = engine(tiles, scale)
    assert sr.shape == (2, 3, DEFAULT_TILE_SIZE * scale, DEFAULT_TILE_SIZE * scale)
    off = grey_levels(sr, expected_sr)
    assert off.max() <= 1
    assert (off > 0).mean() < 1e-3  # rounding ties, not a drift
    torch.testing.assert_close(features, expected_features, atol=1e-4, rtol=1e-4)  # the uncertainty head's input


def test_shapes_other_than_the_tile_run_in_pytorch(model: LoadedModel, monkeypatch) -> None:
    engine = make_engine("onnxruntime", model, CPU, DEFAULT_TILE_SIZE)
    monkeypatch.setattr(engine, "_run", lambda scale: pytest.fail("a graph was asked for another shape"))
    lr = torch.rand(1, 3, 40, 72)
    with torch.inference_mode():
        sr, _ = engine(lr, 3)
        expected, _ = TorchEngine(model)(lr, 3)
    assert torch.equal(sr, expected)


def test_auto_takes_onnx_runtime_on_the_cpu_and_pytorch_elsewhere(model: LoadedModel, monkeypatch) -> None:
    assert make_engine("auto", model, CPU, 64).name == "onnxruntime"
    assert make_engine("auto", model, torch.device("cuda"), 64).name == "torch"
    monkeypatch.setattr(engines, "_installed", lambda module: False)
    assert make_engine("auto", model, CPU, 64).name == "torch"  # the documented fallback: no engine installed


def test_a_named_engine_that_cannot_run_says_why(model: LoadedModel, monkeypatch) -> None:
    with pytest.raises(EngineUnavailable, match="one of auto, torch"):
        make_engine("tensorrt", model, CPU, 64)
    with pytest.raises(EngineUnavailable, match="runs on the CPU"):
        make_engine("onnxruntime", model, torch.device("cuda"), 64)
    monkeypatch.setattr(engines, "_installed", lambda module: False)
    with pytest.raises(EngineUnavailable, match="onnxruntime engine is not installed"):
        make_engine("onnxruntime", model, CPU, 64)


def test_graphs_are_built_once_and_found_beside_the_weights_first(model: LoadedModel, tmp_path: Path,
                                                                   monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = graph_file(model, 2, 32)
    assert built.parent == tmp_path / "cache" / "hndsr" / "onnx" and built.name == graph_name(model, 2, 32)
    assert model.sha256[:16] in built.name  # other weights never take this graph
    stamp = built.stat().st_mtime_ns
    assert graph_file(model, 2, 32) == built and built.stat().st_mtime_ns == stamp  # not built again
    beside = Path(tmp_path / "weights" / "onnx" / built.name)
    beside.parent.mkdir(parents=True)
    beside.write_bytes(built.read_bytes())
    monkeypatch.setattr(model, "path", tmp_path / "weights" / "hndsr.safetensors")
    assert graph_file(model, 2, 32) == beside
    assert not list(built.parent.glob("*.partial"))


def test_a_pipeline_on_onnx_runtime_keeps_the_output_and_the_map() -> None:
    image = rgb_image(DEFAULT_TILE_SIZE + 40, DEFAULT_TILE_SIZE + 8, seed=5)  # four whole tiles, blended
    on_torch = HNDSRPipeline.from_pretrained(device="cpu", engine="torch")
    on_engine = HNDSRPipeline(on_torch.model, CPU, engine="onnxruntime")
    assert isinstance(on_engine.engine, GraphEngine)
    for options in (UpscaleOptions(2, uncertainty=True), UpscaleOptions(3, ddim_steps=2, seed=7)):
        got, expected = on_engine.upscale(image, options), on_torch.upscale(image, options)
        assert np.abs(got.image.astype(int) - expected.image.astype(int)).max() <= 1
        if options.uncertainty:
            np.testing.assert_allclose(got.uncertainty, expected.uncertainty, atol=1e-4)


def test_a_graph_gives_back_what_a_run_took(model: LoadedModel) -> None:
    """What a run allocates goes back to the heap (and from it to the system when it is trimmed, as the service
    does when idle): ONNX Runtime's arena kept each session's largest run, 3.8 GB over the seven scales."""
    engine = make_engine("onnxruntime", model, CPU, DEFAULT_TILE_SIZE)
    engine.prepare([8])
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    trim(0)
    before = resident_mb()
    with torch.inference_mode():
        for _ in range(2):
            engine(torch.rand(2, 3, DEFAULT_TILE_SIZE, DEFAULT_TILE_SIZE), 8)  # ~1 GB of intermediates in a run
    trim(0)
    assert resident_mb() - before < 200


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
