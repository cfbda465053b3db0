"""Register the committed weights in the BentoML model store, build the Bento, optionally export it or
containerize it; or, with --qgis-plugin, only package the QGIS plugin.

Prints the Bento tag on its last line (or the image tag with --image, or the plugin's zip). Run through
scripts/build, which prepares .venv first.
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import bentoml

from hndsr_service.model_store import register

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "hndsr_qgis"
PLUGIN_FILES = ("*.py", "metadata.txt", "icon.png")
ZIP_TIME = (2026, 1, 1, 0, 0, 0)  # fixed, so that the same sources give the same zip


def qgis_plugin(dest: Path) -> Path:
    """``dest/hndsr_qgis-<version>.zip``, as QGIS's "Install from ZIP" takes it: the package folder with its
    metadata, icon and the project's licence."""
    metadata = configparser.ConfigParser()
    metadata.read(PLUGIN / "metadata.txt")
    archive = dest / f"hndsr_qgis-{metadata['general']['version']}.zip"
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted({path for pattern in PLUGIN_FILES for path in PLUGIN.glob(pattern)})
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in [*files, ROOT / "LICENSE"]:
            entry = zipfile.ZipInfo(f"{PLUGIN.name}/{path.name}", ZIP_TIME)
            entry.compress_type, entry.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            out.writestr(entry, path.read_bytes())
    return archive


def containerize(tag: str, image: str, cuda: bool) -> None:
    """`bentoml containerize` with Docker's classic builder; the CPU base is built from Debian first."""
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    if not cuda:
        subprocess.run([str(ROOT / "scripts" / "docker-images"), "base"], check=True, env=env)
    start = time.monotonic()
    # Run from the temp folder: BentoML 1.4.40 re-reads the Bento's Dockerfile template from a temp copy and
    # refuses any path outside the working directory.
    subprocess.run([str(Path(sys.executable).with_name("bentoml")), "containerize", str(tag), "-t", image], check=True, env=env,
                   cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL if os.environ.get("QUIET") else None)
    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()
    print(f"image {image}: {int(size) / 2**20:.0f} MiB, containerized in {time.monotonic() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, metavar="PATH", help="also write the Bento archive here")
    parser.add_argument("-f", "--bentofile", default=None, help="bentofile.yaml (default) or bentofile.cuda.yaml")
    parser.add_argument("--image", nargs="?", const="", metavar="TAG",
                        help="also build the container image (default tag hndsr:latest, hndsr:latest-cuda with "
                             "--cuda; needs dockerd)")
    parser.add_argument("--cuda", action="store_true", help="use bentofile.cuda.yaml (NVIDIA CUDA base image)")
    parser.add_argument("--qgis-plugin", action="store_true",
                        help="only write the QGIS plugin, dist/hndsr_qgis-<version>.zip (no model, no Bento)")
    args = parser.parse_args()
    if args.qgis_plugin:
        print(qgis_plugin(ROOT / "dist"))
        return
    bentofile = args.bentofile or ("bentofile.cuda.yaml" if args.cuda else "bentofile.yaml")
    print(f"model {register()}")
    bento = bentoml.bentos.build_bentofile(str(ROOT / bentofile), build_ctx=str(ROOT))
    if args.export:
        print(f"exported {bento.export(str(args.export.resolve()))}")
    if args.image is not None:
        cuda = bentofile == "bentofile.cuda.yaml"
        image = args.image or ("hndsr:latest-cuda" if cuda else "hndsr:latest")  # distinct, so neither replaces the other
        containerize(bento.tag, image, cuda=cuda)
        print(image)
    else:
        print(bento.tag)


if __name__ == "__main__":
    main()
