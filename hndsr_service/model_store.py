"""Register the committed HNDSR weights in the BentoML model store (``bentoml models list``).

``python -m hndsr_service.model_store`` registers them once: every variant the weights folder holds
(``hndsr_model.weights.VARIANT_FILES``), each beside its manifest and its ONNX Runtime graphs for every scale at
the default tile size (``hndsr_model.engines``: built once on this machine, then copied), as one model
``hndsr:<tag>``, so that a Bento's server starts without building them. Running it
again with the same weights is a no-op that prints the existing tag. The model's metadata carries the default
variant's version, sha256 and quality, and every variant's version and sha256.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from hndsr_model.engines import GRAPH_FOLDER, graph_file
from hndsr_model.options import DEFAULT_TILE_SIZE, SCALES
from hndsr_model.weights import DEFAULT_VARIANT, MODEL_NAME, WEIGHTS_DIR, load_weights, manifest_path, variant_paths


def register(folder: Path = WEIGHTS_DIR) -> str:
    """Store the variants found in ``folder`` (the default one is required) as ``hndsr:<tag>``; returns the tag."""
    paths = variant_paths(folder)
    models = {variant: load_weights(path) for variant, path in paths.items()}  # checksums verified first
    variants = {variant: {"version": m.version, "sha256": m.sha256} for variant, m in models.items()}
    try:
        latest = bentoml.models.get(f"{MODEL_NAME}:latest")
        if latest.info.metadata.get("variants") == variants:
            return str(latest.tag)
    except NotFound:
        pass
    default = models[DEFAULT_VARIANT]
    metadata = {"version": default.version, "sha256": default.sha256, "variants": variants,
                "quality_rsscn7_val_y_psnr_db": default.manifest.get("quality", {}).get("y_psnr_db", {})}
    with bentoml.models.create(MODEL_NAME, metadata=metadata, labels={"framework": "pytorch"}) as stored:
        Path(stored.path_of(GRAPH_FOLDER)).mkdir()
        for variant, path in paths.items():
            shutil.copy2(path, stored.path_of(path.name))
            shutil.copy2(manifest_path(path), stored.path_of(manifest_path(path).name))
            for scale in SCALES:
                graph = graph_file(models[variant], scale, DEFAULT_TILE_SIZE)
                shutil.copy2(graph, stored.path_of(f"{GRAPH_FOLDER}/{graph.name}"))
    return str(stored.tag)


if __name__ == "__main__":
    print(register(Path(sys.argv[1]) if len(sys.argv) > 1 else WEIGHTS_DIR))
