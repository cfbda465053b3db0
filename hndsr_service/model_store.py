"""Register the committed HNDSR weights in the BentoML model store (``bentoml models list``).

``python -m hndsr_service.model_store`` registers them once; running it again with the same weights
is a no-op that prints the existing tag. The model's metadata carries version, sha256 and quality.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from hndsr_model.weights import DEFAULT_WEIGHTS, MODEL_NAME, load_weights, manifest_path

WEIGHTS_FILE = "hndsr.safetensors"


def register(weights: Path = DEFAULT_WEIGHTS) -> str:
    """Store ``weights`` and its manifest as ``hndsr:<version>``; returns the tag."""
    model = load_weights(weights)  # verifies the checksum before anything is stored
    try:
        latest = bentoml.models.get(f"{MODEL_NAME}:latest")
        if latest.info.metadata.get("sha256") == model.sha256:
            return str(latest.tag)
    except NotFound:
        pass
    quality = model.manifest.get("quality", {}).get("y_psnr_db", {})
    metadata = {"version": model.version, "sha256": model.sha256, "quality_rsscn7_val_y_psnr_db": quality}
    with bentoml.models.create(MODEL_NAME, metadata=metadata, labels={"framework": "pytorch"}) as stored:
        shutil.copy2(weights, stored.path_of(WEIGHTS_FILE))
        shutil.copy2(manifest_path(weights), stored.path_of(manifest_path(Path(WEIGHTS_FILE)).name))
    return str(stored.tag)


if __name__ == "__main__":
    print(register(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_WEIGHTS))
