"""``hndsr export-onnx``: a self-contained ONNX model that ONNX Runtime alone runs on imagery it was never tuned on,
within one grey level of the service's output, with the shapes and metadata QGIS's Deepness plugin reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from hndsr_client.cli import main
from hndsr_model.export import ExportSpec, export_onnx
from hndsr_model.options import SCALES, UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from tests.helpers import DATA, requires_data

# What ONNX Runtime alone does with the file: Deepness's preprocessing (HWC uint8 RGB -> NCHW float 0..1) and
# one run; nothing of HNDSR or PyTorch is imported (checked).
RUN_ALONE = """
import sys
import numpy as np, onnxruntime
from PIL import Image
image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))[:256, :256]
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
batch = image.astype("float32").transpose(2, 0, 1)[None] / 255
(out,) = session.run(None, {session.get_inputs()[0].name: batch})
assert not any(name.startswith(("torch", "hndsr")) for name in sys.modules), "more than ONNX Runtime was used"
np.save(sys.argv[3], np.rint(out[0].transpose(1, 2, 0) * 255).astype(np.uint8))
"""


@pytest.fixture(scope="module")
def pipeline() -> HNDSRPipeline:
    return HNDSRPipeline.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def exported_x2(pipeline: HNDSRPipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(pipeline.model, ExportSpec(2), tmp_path_factory.mktemp("onnx") / "hndsr-x2.onnx")


def test_the_file_has_deepness_shapes_and_metadata(exported_x2: Path) -> None:
    model = onnx.load(exported_x2)
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    dims = [[d.dim_value for d in value.type.tensor_type.shape.dim] for value in (graph_input, graph_output)]
    assert dims == [[1, 3, 256, 256], [1, 3, 512, 512]]  # batch 1, square: what Deepness accepts
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    meta = {prop.key: json.loads(prop.value) for prop in model.metadata_props}  # Deepness json.loads each value
    assert str(meta["model_type"]).capitalize() == "Superresolution"
    assert (float(meta["resolution"]), int(meta["tile_size"]), int(meta["tiles_overlap"])) == (1000.0, 256, 10)
    assert meta["scale"] == 2 and meta["hndsr_model"] == "bicubic" and meta["hndsr_version"]
    assert not list(exported_x2.parent.glob("*.partial"))


@requires_data("rsscn7", "val")
def test_onnx_runtime_alone_matches_the_service_within_one_grey_level(exported_x2: Path, pipeline: HNDSRPipeline,
                                                                        tmp_path: Path) -> None:
    source = sorted((DATA / "rsscn7" / "val").rglob("*.jpg"))[40]
    subprocess.run([sys.executable, "-c", RUN_ALONE, str(exported_x2), str(source), str(tmp_path / "out.npy")],
                   check=True, timeout=120)
    alone = np.load(tmp_path / "out.npy")
    image = np.asarray(Image.open(source).convert("RGB"))[:256, :256]
    service = pipeline.upscale(image, UpscaleOptions(2)).image
    assert alone.shape == service.shape == (512, 512, 3)
    assert np.abs(alone.astype(int) - service.astype(int)).max() <= 1


def test_the_command_writes_a_checked_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-onnx", str(tmp_path / "x3.onnx"), "--scale", "3", "--model", "real", "--tile", "64",
                 "--resolution", "50"]) == 0
    line = capsys.readouterr().out
    assert "x3: 64x64 -> 192x192 RGB" in line and "grey level" in line
    meta = {prop.key: json.loads(prop.value) for prop in onnx.load(tmp_path / "x3.onnx").metadata_props}
    assert (meta["hndsr_model"], meta["tile_size"], meta["resolution"]) == ("real", 64, 50.0)


def test_the_command_refuses_what_it_cannot_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["export-onnx", str(tmp_path / "x.onnx"), "--scale", "9"])
    assert stop.value.code == 2 and "a scale in 2..8, or all" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "x.onnx"), "--tile", "8"]) == 2
    assert "tile must be in 32..1024" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_all_scales_name_their_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written: list[tuple[int, Path]] = []

    def export(model: object, spec: ExportSpec, path: Path) -> Path:  # the naming, not seven real exports
        written.append((spec.scale, path))
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"onnx")
        return path

    monkeypatch.setattr("hndsr_model.export.export_onnx", export)
    monkeypatch.setattr("hndsr_model.export.max_grey_difference", lambda *args: 0)
    assert main(["export-onnx", str(tmp_path / "models"), "--scale", "all"]) == 0
    assert written == [(scale, tmp_path / "models" / f"hndsr-bicubic-x{scale}.onnx") for scale in SCALES]
