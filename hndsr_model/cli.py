"""``hndsr upscale INPUT OUTPUT --scale 4 [--ddim-steps N] [--seed S] [--device cpu|cuda]``.

INPUT is an image file (OUTPUT is then the output file) or a folder (OUTPUT is then a folder that
receives a PNG of the same name for every image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from .data import ImageDecodeError, list_images, load_rgb
from .pipeline import HNDSRPipeline
from .weights import DEFAULT_WEIGHTS, WeightsError


def upscale_file(pipeline: HNDSRPipeline, src: Path, dst: Path, args: argparse.Namespace, show_tiles: bool) -> None:
    image = load_rgb(src)
    bar = tqdm(total=pipeline.count_tiles(*image.shape[:2]), desc=src.name, unit="tile",
               disable=not show_tiles, leave=False)
    result = pipeline.upscale(image, args.scale, args.ddim_steps, args.seed,
                              progress=lambda done, _total: bar.update(done - bar.n))
    bar.close()
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.image).save(dst)


def run_upscale(args: argparse.Namespace) -> int:
    if not args.input.exists():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    try:
        pipeline = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    except (WeightsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.input.is_dir():
        try:
            upscale_file(pipeline, args.input, args.output, args, show_tiles=True)
        except ImageDecodeError as exc:
            print(f"error: {args.input}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
        return 0
    sources, failed = list_images(args.input), 0
    for src in tqdm(sources, desc="images", unit="img"):
        try:
            upscale_file(pipeline, src, args.output / src.relative_to(args.input).with_suffix(".png"), args, False)
        except ImageDecodeError as exc:
            failed += 1
            tqdm.write(f"skipped {src}: {exc}", file=sys.stderr)
    print(f"wrote {len(sources) - failed} images to {args.output}" + (f", skipped {failed}" if failed else ""))
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hndsr", description="HNDSR satellite image super-resolution")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upscale", help="super-resolve an image or a folder of images")
    up.add_argument("input", type=Path)
    up.add_argument("output", type=Path)
    up.add_argument("--scale", type=int, default=4, choices=range(2, 9), metavar="{2..8}")
    up.add_argument("--ddim-steps", type=int, default=0, choices=range(0, 51), metavar="{0..50}")
    up.add_argument("--seed", type=int, default=None)
    up.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    up.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    up.set_defaults(func=run_upscale)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
