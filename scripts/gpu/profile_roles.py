"""Where a py-spy profile of the server's worker spent its samples, by the role of the thread.

``py-spy record --subprocesses -f raw`` writes one collapsed stack per line (``process ...;frame;frame N``).
This sums the server's worker processes' samples (all workers together) by what the thread was doing: the
event loop (HTTP, guards), decoding, inference in a slot, the micro-batcher's network runs, encoding, waiting.
A profile taken with ``--gil`` counts only the thread holding the GIL: a role's share of it is its share of
the interpreter. ``scripts/gpu/gpu_serving.sh --workers`` records both and runs this on them::

    python scripts/gpu/profile_roles.py profile-threads.txt profile-gil.txt --seconds 8 --rate 100
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# Innermost frames of a thread that waits (py-spy does not always see these threads as idle).
WAITS = ("Condition.wait (threading.py", "Queue.get (queue.py", "Runner.run (asyncio/runners.py")
# In a pool thread, the first marker found names its role: the order matters (a slot's thread waits on a batch).
ROLES = (
    ("MicroBatcher._serve", "micro-batcher (the network)"),
    ("encode (imaging", "encoding the output"),
    ("decode_image", "decoding the upload"),
    ("work_then_trim", "inference in a slot"),
)


def role(stack: str) -> str:
    if stack.rsplit(";", 1)[-1].startswith(WAITS):
        return "waiting (lock, queue, epoll)"
    if "Thread._bootstrap" not in stack:  # the main thread runs the event loop and every coroutine
        return "event loop (HTTP, guards, tracing)"
    return next((name for marker, name in ROLES if marker in stack), "other pool-thread work")


def worker_roles(path: Path) -> Counter[str]:
    """Samples per role in the server's worker processes (the benchmark and the arbiter left out)."""
    roles: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "_bentoml_impl.worker.service" in stack:
            roles[role(stack)] += int(count)
    return roles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", type=Path, nargs="+", help="py-spy raw profiles")
    parser.add_argument("--seconds", type=float, required=True, help="how long each was recorded")
    parser.add_argument("--rate", type=float, default=100, help="py-spy's samples per second")
    args = parser.parse_args()
    for path in args.profiles:
        roles = worker_roles(path)
        ticks = args.seconds * args.rate
        busy = sum(count for name, count in roles.items() if not name.startswith("waiting"))
        print(f"{path.name}: the worker's samples by role, as a share of the recording's {ticks:.0f} ticks; "
              f"{busy / ticks:.2f} threads busy on average, waiting ones left out")
        for name, count in roles.most_common():
            print(f"  {name:36s} {count:6d} samples  {count / ticks:6.1%}")


if __name__ == "__main__":
    main()
