"""The ``hndsr`` command.

    hndsr upscale INPUT OUTPUT [--scale 4] [--model bicubic|real] [--bands 4,3,2] [--ddim-steps N] [--seed S]
                  [--device auto|cpu|cuda] [--engine auto|torch|onnxruntime]
                  [--uncertainty [--uncertainty-samples N]]
    hndsr submit INPUT OUTPUT [--url http://127.0.0.1:8000] [--scale 4] [...the same options] [--api-key KEY]
                 [--no-delete-after]
    hndsr export-onnx OUT.onnx [--scale 4|all] [--model bicubic|real] [--tile 256] [--overlap 10] [--resolution 1000]
    hndsr batch SOURCE... --output DEST --scale S [--bands 4,3,2] [--model bicubic|real] [--asset KEY]
                [--ray ADDRESS] [--gpus-per-worker F]
    hndsr --version

``upscale`` runs the model here (``local.py``); ``submit`` sends INPUT to a server as a scene job, shows its
progress and downloads the result; ``batch`` runs archives of scenes in process or on Ray (``hndsr_batch``, the
extra ``.[ray]``). This module imports neither PyTorch nor rasterio, so that ``--help``, ``--version`` and
``submit`` start at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hndsr_model.options import (
    DDIM_STEPS,
    DEFAULT_CONSISTENCY,
    DEFAULT_EXPORT_OVERLAP_PERCENT,
    DEFAULT_EXPORT_RESOLUTION_CM,
    DEFAULT_TILE_SIZE,
    DEFAULT_UNCERTAINTY_SAMPLES,
    DEFAULT_VARIANT,
    ENGINES,
    SCALES,
    UNCERTAINTY_SAMPLES,
    VARIANTS,
    UpscaleOptions,
    parse_bands,
    shipped_versions,
)

DEFAULT_URL = "http://127.0.0.1:8000"


def options_of(args: argparse.Namespace) -> UpscaleOptions:
    return UpscaleOptions(args.scale, args.ddim_steps, args.seed, args.bands, args.model, args.uncertainty,
                          args.uncertainty_samples, args.consistency)


def run_upscale(args: argparse.Namespace, options: UpscaleOptions) -> int:
    from .local import run_upscale as upscale_here  # PyTorch and rasterio: seconds to import

    return upscale_here(args, options)


def run_export(args: argparse.Namespace, _: None) -> int:
    from .local import run_export as export_here  # PyTorch and the ONNX exporter

    return export_here(args)


def run_submit(args: argparse.Namespace, options: UpscaleOptions) -> int:
    import httpx

    from .client import HNDSRError, JobsClient

    if not args.input.is_file():
        print(f"error: {args.input} is not a file", file=sys.stderr)
        return 2
    job_id = None
    try:
        with JobsClient(args.url, api_key=args.api_key) as client:
            job_id = client.submit(args.input, options)
            print(f"job {job_id} queued on {args.url}", file=sys.stderr)
            try:
                job = client.wait(job_id, progress=True)
            except KeyboardInterrupt:
                client.cancel(job_id)
                print(f"interrupted: job {job_id} cancelled", file=sys.stderr)
                return 130
            client.download(job_id, args.output, delete_after=args.delete_after)
    except HNDSRError as exc:
        print(f"error: the service refused the job: {exc}" if job_id is None else f"error: job {job_id}: {exc}",
              file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        reason = exc or type(exc).__name__
        print(f"error: cannot reach the HNDSR service at {args.url} ({reason}); is it running? (scripts/serve "
              "starts one)" if job_id is None else f"error: job {job_id}: the connection to {args.url} was lost "
              f"({reason}); the job goes on there: `curl {args.url}/jobs/{job_id}`", file=sys.stderr)
        return 1
    except OSError as exc:  # reading the input, writing the output
        print(f"error: {exc}", file=sys.stderr)
        return 1
    band = job["output"].get("uncertainty_band")
    print(f"wrote {args.output}" + (f" (band {band}: the uncertainty map)" if band else ""))
    return 0


BATCH_EXTRA = "pip install -e '.[ray]'"


def run_batch(args: argparse.Namespace, _: None) -> int:
    """The ``batch`` command: 0 when every input was done, 1 when one failed, 2 when it cannot start."""
    needed = ["pystac", "rio_stac", "boto3"] + (["ray"] if args.ray else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: hndsr batch needs {', '.join(missing)}: {BATCH_EXTRA}", file=sys.stderr)
        return 2
    from hndsr_batch.run import run_batch as batch
    from hndsr_batch.work import BatchParameters

    params = BatchParameters(args.output, args.scale, args.bands, args.model, args.consistency)
    return batch(args.sources, params, asset=args.asset, ray=args.ray, gpus_per_worker=args.gpus_per_worker)


def export_scales(text: str) -> tuple[int, ...]:
    if text == "all":
        return tuple(SCALES)
    if text.isdigit() and int(text) in SCALES:
        return (int(text),)
    raise argparse.ArgumentTypeError(f"a scale in {span(SCALES)}, or all, got {text!r}")


def band_list(text: str) -> tuple[int, ...]:
    try:
        bands = parse_bands(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if bands is None:
        raise argparse.ArgumentTypeError("give at least one band number")
    return bands


def span(values: range) -> str:
    return f"{values.start}..{values.stop - 1}"


class HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help says its default, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_model_options(parser: argparse.ArgumentParser, inputs: str, outputs: str, map_goes: str) -> None:
    parser.add_argument("input", type=Path, help=inputs)
    parser.add_argument("output", type=Path, help=outputs)
    parser.add_argument("--scale", type=int, default=4, choices=SCALES, metavar=span(SCALES),
                        help="the upscaling factor")
    parser.add_argument("--model", choices=VARIANTS, default=DEFAULT_VARIANT,
                        help="the shipped weights: bicubic (clean imagery; the uncertainty map) or real (sensor-like "
                             "blur, noise and compression)")
    parser.add_argument("--bands", type=band_list, default=None, metavar="4,3,2",
                        help="TIFF/GeoTIFF inputs: 1-based bands to keep, in output order (default: all)")
    parser.add_argument("--ddim-steps", type=int, default=0, choices=DDIM_STEPS, metavar=span(DDIM_STEPS),
                        help="diffusion refinement steps (0: the neural operator alone, deterministic)")
    parser.add_argument("--seed", type=int, default=None,
                        help="the diffusion noise's seed, for the same bytes again (default: random, reported)")
    parser.add_argument("--uncertainty", action="store_true",
                        help=f"also make the uncertainty map (sigma of the output's luma, 0..1, float32): {map_goes}")
    parser.add_argument("--uncertainty-samples", type=int, default=DEFAULT_UNCERTAINTY_SAMPLES,
                        choices=UNCERTAINTY_SAMPLES, metavar=span(UNCERTAINTY_SAMPLES),
                        help="with --ddim-steps > 0: the seeded diffusion samples behind the map")
    add_consistency_option(parser)


def add_consistency_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consistency", action=argparse.BooleanOptionalAction, default=DEFAULT_CONSISTENCY,
                        help="project the output onto the input: each SxS block averages to its input pixel, per "
                             "band, in the data's units (--no-consistency: the network's output as it is)")


class ShowVersion(argparse.Action):
    """``--version``: the package's and the shipped models' versions, read only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        try:
            package = version("hndsr")
        except PackageNotFoundError:  # run from a folder that was not installed (pip install -e .)
            package = "(not installed)"
        models = ", ".join(f"{variant} {number}" for variant, number in shipped_versions().items())
        print(f"hndsr {package} (models: {models})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    formatter = HelpWithDefaults
    parser = argparse.ArgumentParser(prog="hndsr", description="HNDSR: super-resolution of satellite and aerial "
                                     "images and georeferenced rasters, x2 to x8", formatter_class=formatter)
    parser.add_argument("--version", action=ShowVersion)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{upscale,submit,export-onnx,batch}")
    up = sub.add_parser("upscale", help="super-resolve an image, a GeoTIFF or a folder here",
                        description="Super-resolve here: a TIFF/GeoTIFF to a .tif becomes a georeferenced COG "
                        "(any size, by windows); other images by OUTPUT's suffix (PNG, JPEG, WebP); a folder gets a "
                        ".tif for every TIFF and a PNG for every other image.", formatter_class=formatter)
    add_model_options(up, "an image (PNG, JPEG, WebP), a TIFF/GeoTIFF, or a folder of them",
                      "the output file (its suffix picks the format), or a folder for a folder",
                      "beside each output, as <stem>.uncertainty.tif")
    up.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                    help="where the model runs (auto: a GPU when there is one)")
    up.add_argument("--weights", type=Path, default=None, help="a weights file to use instead of --model's")
    up.add_argument("--engine", default="auto", choices=ENGINES,
                    help="what runs the neural operator (auto: ONNX Runtime on the CPU, PyTorch on a GPU)")
    up.set_defaults(func=run_upscale, prepare=options_of)
    submit = sub.add_parser("submit", help="super-resolve a raster on a server, as a scene job",
                            description="Send a raster to an HNDSR service as a scene job, follow its progress "
                            "and download the Cloud-Optimized GeoTIFF. Ctrl-C cancels the job.",
                            formatter_class=formatter)
    add_model_options(submit, "a TIFF/GeoTIFF (or PNG, JPEG, WebP) file", "the result: a Cloud-Optimized GeoTIFF",
                      "as the result's last band")
    submit.add_argument("--url", default=DEFAULT_URL, help="the service")
    submit.add_argument("--api-key", default=None, help="when the service sets API_KEYS")
    submit.add_argument("--delete-after", action=argparse.BooleanOptionalAction, default=True,
                        help="delete the job from the service once its result is downloaded")
    submit.set_defaults(func=run_submit, prepare=options_of)
    add_export_parser(sub, formatter)
    add_batch_parser(sub, formatter)
    return parser


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"{text} is not a number of GPUs in 0..64 (fractions allowed)")
    return value


def add_batch_parser(sub: argparse._SubParsersAction, formatter: type[argparse.HelpFormatter]) -> None:
    batch = sub.add_parser("batch", help="super-resolve an archive of scenes, here or on a Ray cluster",
                           description="Super-resolve every input into DEST as <stem>_x<S>.tif (a COG: CRS, bounds, "
                           "dtype, bands and nodata kept) and <stem>_x<S>.json (its STAC Item), with batch.json "
                           "telling what happened. Inputs are read where they are, by windows. Running the same "
                           f"command again skips finished inputs. Needs the extra: {BATCH_EXTRA}",
                           formatter_class=formatter)
    batch.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="files, folders or globs; s3:// objects, prefixes or globs ('s3://bucket/scenes/*.tif'); "
                            "https:// URLs of COGs; STAC Item or ItemCollection JSON (a path or URL)")
    batch.add_argument("--output", required=True, metavar="DEST", help="a folder or s3://BUCKET/PREFIX")
    batch.add_argument("--scale", type=int, required=True, choices=SCALES, metavar=span(SCALES),
                       help="the upscaling factor")
    batch.add_argument("--bands", type=band_list, default=None, metavar="4,3,2",
                       help="1-based bands to keep, in output order (default: all)")
    batch.add_argument("--model", choices=VARIANTS, default=DEFAULT_VARIANT, help="the shipped weights")
    add_consistency_option(batch)
    batch.add_argument("--asset", default=None, metavar="KEY",
                       help="a STAC input's asset to read (default: visual, else its first GeoTIFF asset)")
    batch.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run on a Ray cluster: auto, ray://HOST:PORT or HOST:PORT (default: in this process)")
    batch.add_argument("--gpus-per-worker", type=fraction, default=1.0, metavar="F",
                       help="with --ray: GPUs per model worker, fractions allowed (CPU workers where the cluster "
                            "has no GPU)")
    batch.set_defaults(func=run_batch, prepare=lambda _: None)


def add_export_parser(sub: argparse._SubParsersAction, formatter: type[argparse.HelpFormatter]) -> None:
    export = sub.add_parser("export-onnx", help="write the model as an ONNX file (ONNX Runtime, QGIS Deepness)",
                            description="Write the neural operator for one scale as a self-contained ONNX model: "
                            "input (1, 3, T, T) float32 RGB in 0..1, output (1, 3, T*S, T*S) in 0..1, with the "
                            "metadata QGIS's Deepness plugin reads. ONNX Runtime alone runs it; the file is checked "
                            "against PyTorch before it is kept.", formatter_class=formatter)
    export.add_argument("output", type=Path,
                        help="the .onnx file; with --scale all, a folder that gets hndsr-<model>-x<S>.onnx")
    export.add_argument("--scale", type=export_scales, default="4", metavar=f"{span(SCALES)}|all",
                        help="the upscaling factor, or all of them")
    export.add_argument("--model", choices=VARIANTS, default=DEFAULT_VARIANT, help="the shipped weights")
    export.add_argument("--weights", type=Path, default=None, help="a weights file to use instead of --model's")
    add_consistency_option(export)
    export.add_argument("--tile", type=int, default=DEFAULT_TILE_SIZE, help="the square input tile's side, pixels")
    export.add_argument("--overlap", type=int, default=DEFAULT_EXPORT_OVERLAP_PERCENT,
                        help="Deepness's overlap of tiles, percent of a tile")
    export.add_argument("--resolution", type=float, default=DEFAULT_EXPORT_RESOLUTION_CM,
                        help="the ground resolution Deepness resamples a layer to, cm per input pixel (1000: "
                             "Sentinel-2's 10 m); set your imagery's")
    export.set_defaults(func=run_export, prepare=lambda _: None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = args.prepare(args)
    except ValueError as exc:  # a value argparse lets through (a seed out of range): its field named
        parser.error(str(exc))
    return args.func(args, options)


if __name__ == "__main__":
    sys.exit(main())
