"""Split the training set into parts that each fit one device call beside the checkout (GPU training sessions).

A call to the lent GPU machine carries at most 64 MiB: the checkout plus the paths it names in ``carry``. The
RSSCN7 training set (106 MiB) therefore travels in parts, each copied to the machine's /tmp, which outlives the
call while the machine stays warm (30 s between calls)::

    .venv/bin/python scripts/gpu/gpu_data.py             # writes .gpu-data/part-1 ... (git-ignored), prints the calls

then one call per part, the last one also running the training (``scripts/train_*_gpu.sh /tmp/rsscn7/train
/tmp/rsscn7/val ...``). Each part holds ``train/<class>/...`` images; the validation set (9 MiB), which those
scripts score on the GPU after training, goes whole into the last part as ``val/``, a folder of its own, and so
do the real Landsat-8 -> Sentinel-2 pairs (4 MiB) as ``pairs/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CALL_LIMIT = 64 * 2**20
MARGIN = 2 * 2**20  # files written meanwhile, rounding of the tool's own count


def checkout_bytes() -> int:
    """What every call carries anyway: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    paths = [ROOT / name.decode() for name in listed if name]
    return sum(path.stat().st_size for path in paths if path.is_file())  # a deleted file is still listed


def split(files: list[Path], budget: int) -> list[list[Path]]:
    """Consecutive runs of ``files`` of at most ``budget`` bytes each."""
    parts: list[list[Path]] = [[]]
    size = 0
    for path in files:
        length = path.stat().st_size
        if length > budget:
            raise SystemExit(f"{path} alone ({length} bytes) is over a call's budget of {budget} bytes")
        if size + length > budget:
            parts.append([])
            size = 0
        parts[-1].append(path)
        size += length
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = ROOT.parent / "shared" / "data" / "rsscn7"
    parser.add_argument("--train", type=Path, default=data / "train")
    parser.add_argument("--val", type=Path, default=data / "val")
    parser.add_argument("--pairs", type=Path, default=data.parent / "geotiff", help="folder of the real pairs")
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu-data", help="a folder inside the checkout")
    args = parser.parse_args()
    dest = args.dest.resolve()
    if not dest.is_relative_to(ROOT) or dest == ROOT:
        raise SystemExit(f"--dest {dest} must be a folder inside the checkout {ROOT} (calls carry only from there)")
    train, val = (sorted(p for p in folder.rglob("*") if p.is_file()) for folder in (args.train, args.val))
    pairs = sorted(args.pairs.glob("scene_*_*.tif"))
    if not train:
        raise SystemExit(f"no files under {args.train}")
    budget = CALL_LIMIT - MARGIN - checkout_bytes()
    # The validation set and the pairs ride with the last part: keep their room free there.
    parts = split(train, budget)
    if sum(f.stat().st_size for f in parts[-1] + val + pairs) > budget:
        parts.append([])
    shutil.rmtree(dest, ignore_errors=True)
    for number, part in enumerate(parts, 1):
        copy(part, args.train, dest / f"part-{number}" / "train")
    copy(val, args.val, dest / f"part-{len(parts)}" / "val")
    copy(pairs, args.pairs, dest / f"part-{len(parts)}" / "pairs")
    print(f"{len(train)} training, {len(val)} validation and {len(pairs)} real-pair files in {len(parts)} parts of at most "
          f"{budget / 2**20:.1f} MiB under {dest}")
    for number in range(1, len(parts) + 1):
        folder = dest.relative_to(ROOT) / f"part-{number}"
        print(f'  run(command="mkdir -p /tmp/rsscn7 && cp -r {folder}/. /tmp/rsscn7/ && ...", carry=["{folder}"])')


def copy(files: list[Path], source: Path, target: Path) -> None:
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


if __name__ == "__main__":
    main()
