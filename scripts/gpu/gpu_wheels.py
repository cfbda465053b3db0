"""Fetch the wheels that the real server needs on a GPU machine whose Python has only PyTorch's stack.

The lent GPU machines (``/work/.library/device``) have Python 3.12 with torch, NumPy, Pillow, safetensors and
tifffile, and no network. This collects the exact versions this checkout's ``.venv`` runs for
``hndsr[serve]`` (BentoML, pydantic, rasterio, ...), minus the PyTorch stack that the machine has, and downloads
them as manylinux x86-64 wheels for the target Python into ``.whl/`` (git-ignored), where a device call can carry
them::

    .venv/bin/python scripts/gpu/gpu_wheels.py            # then: scripts/gpu/gpu_serving.sh on the machine

``--python-version 3.11 --dest DIR`` fetches the same set for this machine's Python, to rehearse the install
(``pip install --no-index --no-deps --target``) and the benchmark here on the CPU.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# What the GPU image already has: PyTorch and everything it needs, and the packages the model code uses.
ON_THE_MACHINE = ("torch", "numpy", "pillow", "safetensors", "tifffile")
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux1_x86_64")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, python_version: str, extras: tuple[str, ...] = ()) -> dict[str, str]:
    """``{name: version}`` of the installed distribution ``root`` and everything it requires on ``python_version``,
    recursively (with ``extras`` for the root only, as ``pip install root[extras]`` resolves them)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()  # a package is reached again when with other extras
    environment = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    pending = [(root, extras)]
    while pending:
        name, wanted = pending.pop()
        if (normalise(name), wanted) in seen:
            continue
        seen.add((normalise(name), wanted))
        dist = metadata.distribution(name)
        found[normalise(name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({**environment, "extra": extra}) for extra in (*wanted, "")):
                pending.append((requirement.name, tuple(sorted(requirement.extras))))
    return found


def wanted_wheels(python_version: str) -> dict[str, str]:
    """The server's distributions (``hndsr[serve]``) beyond the machine's PyTorch stack, at this venv's versions.
    (The machine's image has more, e.g. httpx and pyyaml, at versions of its own: carrying ours keeps the server
    on the versions it is tested with.)"""
    have: set[str] = set()
    for name in ON_THE_MACHINE:
        have |= closure(name, python_version).keys()
    needed = closure("hndsr", python_version, ("serve",))
    return {name: version.split("+")[0] for name, version in needed.items() if name not in have | {"hndsr"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python-version", default="3.12", help="the target machine's Python (default 3.12)")
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    args = parser.parse_args()
    wheels = wanted_wheels(args.python_version)
    for stale in args.dest.glob("*.whl"):  # two versions of one package would stop the install there
        stale.unlink()
    platforms = [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--implementation", "cp", "--python-version", args.python_version, *platforms,
                    "-d", str(args.dest), *(f"{name}=={version}" for name, version in sorted(wheels.items()))],
                   check=True)
    files = sorted(args.dest.glob("*.whl"))
    size = sum(f.stat().st_size for f in files)
    print(f"{len(wheels)} distributions, {len(files)} wheels in {args.dest}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
