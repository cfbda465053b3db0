"""Shared fixtures: a private BentoML home with the model registered, and small synthetic images."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")


def requires_data(*parts: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not DATA.joinpath(*parts).exists(), reason=f"{DATA.joinpath(*parts)} not present")


def rgb_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random image (like a real photo at small scale, unlike white noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A BentoML home of the test session's own, with the committed weights registered."""
    home = tmp_path_factory.mktemp("bentoml_home")
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    from bentoml._internal.configuration.containers import BentoMLContainer

    BentoMLContainer.bentoml_home.set(str(home))
    from hndsr_service.model_store import register

    register()
    yield home
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous
