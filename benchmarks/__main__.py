"""``python -m benchmarks NAME [options]``: run the benchmark module ``NAME`` (listed in the package's docstring)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks

SHARED = {"common", "scrape", "census"}  # helpers, not benchmarks


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name not in SHARED
                  and not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in names():
        print(f"usage: python -m benchmarks {{{','.join(names())}}} [options]\n\n{benchmarks.__doc__}",
              file=sys.stderr if argv and argv[0] not in {"-h", "--help"} else sys.stdout)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    return importlib.import_module(f"benchmarks.{argv[0]}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
