"""The ``hndsr`` command.

    hndsr upscale INPUT OUTPUT --scale 4 [--model bicubic|real] [--bands 4,3,2] [--ddim-steps N] [--seed S]
                  [--device cpu|cuda] [--uncertainty [--uncertainty-samples N]]
    hndsr submit INPUT OUTPUT --url http://HOST:8000 --scale 4 [--model bicubic|real] [--bands 4,3,2] [--api-key KEY]

``upscale`` runs the model here. A TIFF/GeoTIFF INPUT written to a ``.tif``/``.tiff`` OUTPUT becomes a
georeferenced COG, read and written by windows (any size, bounded memory); any other pair is an image
file (PNG, JPEG, WebP by OUTPUT's suffix). INPUT may be a folder: OUTPUT is then a folder that gets a
``.tif`` for every TIFF and a PNG for every other image. ``submit`` sends INPUT to a server as a scene
job, shows its progress and downloads the result to OUTPUT.

``--uncertainty`` also writes the per-pixel uncertainty map beside each output, as ``<stem>.uncertainty.tif``
(one float32 band, georeferenced like a georeferenced output); the output itself is the same either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from hndsr_model.data import ImageDecodeError, list_images, load_rgb
from hndsr_model.options import (
    DDIM_STEPS,
    DEFAULT_UNCERTAINTY_SAMPLES,
    DEFAULT_VARIANT,
    SCALES,
    UNCERTAINTY_SAMPLES,
    VARIANTS,
    UpscaleOptions,
)
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import VARIANT_FILES, WEIGHTS_DIR, WeightsError
from hndsr_raster import (
    SceneUpscaler,
    is_tiff,
    open_raster,
    parse_bands,
    uncertainty_path,
    uncertainty_to_tiff,
)

from .client import HNDSRError, JobsClient

TIFF_SUFFIXES = {".tif", ".tiff"}


def is_raster_pair(src: Path, dst: Path) -> bool:
    with src.open("rb") as head:
        return is_tiff(head.read(4)) and dst.suffix.lower() in TIFF_SUFFIXES


def options_of(args: argparse.Namespace) -> UpscaleOptions:
    return UpscaleOptions(args.scale, args.ddim_steps, args.seed, args.bands, args.model, args.uncertainty,
                          args.uncertainty_samples)


def upscale_file(pipeline: HNDSRPipeline, src: Path, dst: Path, options: UpscaleOptions, show_tiles: bool) -> None:
    """``src`` -> ``dst`` (and with ``--uncertainty`` the map beside it, at ``uncertainty_path(dst)``)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if is_raster_pair(src, dst):
        with open_raster(src) as raster:
            upscaler = SceneUpscaler(pipeline, raster, options, uncertainty_file=True)
            with tqdm(total=upscaler.tiles_total, desc=src.name, unit="tile", disable=not show_tiles,
                      leave=False) as bar:
                upscaler.write(dst, progress=lambda done, _total: bar.update(done - bar.n))
        return
    if options.bands:
        raise ImageDecodeError("--bands applies to a TIFF/GeoTIFF input written to a .tif output")
    image = load_rgb(src)
    with tqdm(total=pipeline.count_tiles(*image.shape[:2]), desc=src.name, unit="tile", disable=not show_tiles,
              leave=False) as bar:
        result = pipeline.upscale(image, options, progress=lambda done, _total: bar.update(done - bar.n))
    Image.fromarray(result.image).save(dst)
    if result.uncertainty is not None:
        uncertainty_path(dst).write_bytes(uncertainty_to_tiff(result.uncertainty))


def folder_output(src: Path, root: Path, out: Path) -> Path:
    with src.open("rb") as head:
        suffix = ".tif" if is_tiff(head.read(4)) else ".png"
    return out / src.relative_to(root).with_suffix(suffix)


def run_upscale(args: argparse.Namespace) -> int:
    if not args.input.exists():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    weights = args.weights or WEIGHTS_DIR / VARIANT_FILES[args.model]
    try:
        pipeline = HNDSRPipeline.from_pretrained(weights, device=args.device)
    except (WeightsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.uncertainty and not pipeline.has_uncertainty:
        print(f"error: --uncertainty: the weights of model {pipeline.version} ({weights}) have no uncertainty "
              "head; use weights that have one (--model bicubic of hndsr 2.1.0 or later)", file=sys.stderr)
        return 1
    if not args.input.is_dir():
        try:
            upscale_file(pipeline, args.input, args.output, options_of(args), show_tiles=True)
        except ImageDecodeError as exc:  # the raster errors are ImageDecodeErrors too
            print(f"error: {args.input}: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
        return 0
    sources, failed = list_images(args.input), 0
    for src in tqdm(sources, desc="images", unit="img"):
        try:
            upscale_file(pipeline, src, folder_output(src, args.input, args.output), options_of(args), False)
        except ImageDecodeError as exc:
            failed += 1
            tqdm.write(f"skipped {src}: {exc}", file=sys.stderr)
    print(f"wrote {len(sources) - failed} images to {args.output}" + (f", skipped {failed}" if failed else ""))
    return 1 if failed else 0


def run_submit(args: argparse.Namespace) -> int:
    if not args.input.is_file():
        print(f"error: {args.input} is not a file", file=sys.stderr)
        return 2
    try:
        with JobsClient(args.url, api_key=args.api_key) as client:
            job_id = client.submit(args.input, options_of(args))
            print(f"job {job_id} queued", file=sys.stderr)
            client.wait(job_id, progress=True)
            client.download(job_id, args.output)
    except HNDSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # connection refused, unreachable host, disk errors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


def band_list(text: str) -> tuple[int, ...]:
    try:
        bands = parse_bands(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if bands is None:
        raise argparse.ArgumentTypeError("give at least one band number")
    return bands


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--scale", type=int, default=4, choices=SCALES, metavar=span(SCALES))
    parser.add_argument("--ddim-steps", type=int, default=0, choices=DDIM_STEPS, metavar=span(DDIM_STEPS))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--model", choices=VARIANTS, default=DEFAULT_VARIANT,
                        help="the shipped weights: bicubic (clean imagery; the uncertainty map) or real (sensor-like "
                             f"blur, noise and compression); default {DEFAULT_VARIANT}")
    parser.add_argument("--bands", type=band_list, default=None, metavar="4,3,2",
                        help="TIFF/GeoTIFF inputs: 1-based bands to keep, in output order")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also make the uncertainty map (sigma of the output's luma, 0..1, float32)")
    parser.add_argument("--uncertainty-samples", type=int, default=DEFAULT_UNCERTAINTY_SAMPLES,
                        choices=UNCERTAINTY_SAMPLES, metavar=span(UNCERTAINTY_SAMPLES),
                        help="with --ddim-steps > 0: the seeded diffusion samples behind the map")


def span(values: range) -> str:
    return f"{{{values.start}..{values.stop - 1}}}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hndsr", description="HNDSR satellite image super-resolution")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upscale", help="super-resolve an image, a GeoTIFF or a folder here")
    add_model_options(up)
    up.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    up.add_argument("--weights", type=Path, default=None, help="a weights file to use instead of --model's")
    up.set_defaults(func=run_upscale)
    submit = sub.add_parser("submit", help="super-resolve a raster on a server as a scene job")
    add_model_options(submit)
    submit.add_argument("--url", default="http://127.0.0.1:8000")
    submit.add_argument("--api-key", default=None, help="when the server sets API_KEYS")
    submit.set_defaults(func=run_submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
