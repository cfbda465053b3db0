"""Split the training set into parts that each fit one device call beside the checkout (GPU training sessions).

A call to the lent GPU machine carries at most 64 MiB: the checkout plus the paths it names in ``carry``. The
108 MB RSSCN7 training set therefore travels in parts, each copied to the machine's /tmp, which outlives the call
while the machine stays warm (30 s between calls)::

    .venv/bin/python scripts/gpu_data.py             # writes .gpu-data/part-1 ... (git-ignored), prints the calls

then one call per part, the last one also running the training (``scripts/train_*_gpu.sh /tmp/train ...``).
Only ``../shared/data/rsscn7/train`` is split: the validation set never travels for training.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALL_LIMIT = 64 * 2**20
MARGIN = 2 * 2**20  # files written meanwhile, rounding of the tool's own count


def checkout_bytes() -> int:
    """What every call carries anyway: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())


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
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rsscn7" / "train")
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu-data")
    args = parser.parse_args()
    files = sorted(p for p in args.data.rglob("*") if p.is_file())
    budget = CALL_LIMIT - MARGIN - checkout_bytes()
    parts = split(files, budget)
    shutil.rmtree(args.dest, ignore_errors=True)
    for number, part in enumerate(parts, 1):
        for path in part:
            target = args.dest / f"part-{number}" / path.relative_to(args.data)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    print(f"{len(files)} files in {len(parts)} parts of at most {budget / 2**20:.1f} MiB under {args.dest}")
    for number in range(1, len(parts) + 1):
        folder = args.dest.relative_to(ROOT) / f"part-{number}"
        print(f'  run(command="mkdir -p /tmp/train && cp -r {folder}/. /tmp/train/ && ...", carry=["{folder}"])')


if __name__ == "__main__":
    main()
