"""Training runs end to end on a tiny folder, exports loadable weights and resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hndsr_model import train
from hndsr_model.weights import load_weights
from tests.conftest import rgb_image


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rgb_image(128, 128, seed=i)).save(tmp_path / "data" / cls / f"{i}.png")
    return tmp_path / "data"


def test_train_exports_and_resumes(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--data", str(folder), "--per-folder", "1", "--out", str(tmp_path / "w.safetensors"),
            "--checkpoint-dir", str(tmp_path / "ck"), "--batch", "2", "--log-every", "1",
            "--checkpoint-every", "2", "--device", "cpu"]
    train.main([*args, "--operator-iters", "2", "--denoiser-iters", "1"])
    out = capsys.readouterr().out
    assert "training on 2 images" in out and "[operator] step 2" in out
    model = load_weights(tmp_path / "w.safetensors")
    assert model.config.residual_scale > 0
    train.main([*args, "--operator-iters", "3", "--denoiser-iters", "1"])
    assert "[operator] resumed at step 2" in capsys.readouterr().out
