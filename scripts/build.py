"""Register the committed weights in the BentoML model store, build the Bento, optionally export it.

Prints the Bento tag on its last line. Run through scripts/build, which prepares .venv first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bentoml

from hndsr_service.model_store import register

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", type=Path, metavar="PATH", help="also write the Bento archive here")
    parser.add_argument("-f", "--bentofile", default="bentofile.yaml", help="bentofile.yaml or bentofile.cuda.yaml")
    args = parser.parse_args()
    print(f"model {register()}")
    bento = bentoml.bentos.build_bentofile(str(ROOT / args.bentofile), build_ctx=str(ROOT))
    if args.export:
        print(f"exported {bento.export(str(args.export.resolve()))}")
    print(bento.tag)


if __name__ == "__main__":
    main()
