"""``hndsr upscale``: the model run here, on a file or a folder (PyTorch and rasterio: imported only for it).

A TIFF/GeoTIFF INPUT written to a ``.tif``/``.tiff`` OUTPUT becomes a georeferenced COG, read and written by
windows (any size, bounded memory); any other pair is an image file (PNG, JPEG, WebP by OUTPUT's suffix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from hndsr_model.data import ImageDecodeError, list_images, load_rgb
from hndsr_model.options import VARIANT_FILES, WEIGHTS_DIR, UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.weights import WeightsError
from hndsr_raster import SceneUpscaler, is_tiff, open_raster, uncertainty_path, uncertainty_to_tiff

TIFF_SUFFIXES = {".tif", ".tiff"}


def is_raster_pair(src: Path, dst: Path) -> bool:
    with src.open("rb") as head:
        return is_tiff(head.read(4)) and dst.suffix.lower() in TIFF_SUFFIXES


def upscale_file(pipeline: HNDSRPipeline, src: Path, dst: Path, options: UpscaleOptions, show_tiles: bool
                 ) -> list[Path]:
    """``src`` -> ``dst`` (and with ``options.uncertainty`` the map beside it); the files written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    progress = tqdm(desc=src.name, unit="tile", disable=not show_tiles, leave=False)
    with progress as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if is_raster_pair(src, dst):
            with open_raster(src) as raster:
                SceneUpscaler(pipeline, raster, options, uncertainty_file=True).write(dst, progress=advance)
        else:
            if options.bands:
                raise ImageDecodeError("--bands applies to a TIFF/GeoTIFF input written to a .tif output")
            result = pipeline.upscale(load_rgb(src), options, progress=advance)
            Image.fromarray(result.image).save(dst)
            if result.uncertainty is not None:
                uncertainty_path(dst).write_bytes(uncertainty_to_tiff(result.uncertainty))
    sigma = uncertainty_path(dst)
    return [dst, sigma] if options.uncertainty and sigma.exists() else [dst]


def folder_output(src: Path, root: Path, out: Path) -> Path:
    with src.open("rb") as head:
        suffix = ".tif" if is_tiff(head.read(4)) else ".png"
    return out / src.relative_to(root).with_suffix(suffix)


def run_upscale(args: argparse.Namespace, options: UpscaleOptions) -> int:
    """The ``upscale`` command: 0 when every output was written, 1 when one failed, 2 for a missing input."""
    if not args.input.exists():
        print(f"error: {args.input} does not exist", file=sys.stderr)
        return 2
    weights = args.weights or WEIGHTS_DIR / VARIANT_FILES[options.model]
    try:
        pipeline = HNDSRPipeline.from_pretrained(weights, device=args.device, engine=args.engine)
    except (WeightsError, RuntimeError) as exc:  # EngineUnavailable is a RuntimeError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if options.uncertainty and not pipeline.has_uncertainty:
        print(f"error: --uncertainty: the weights of model {pipeline.version} ({weights}) have no uncertainty "
              "head; use weights that have one (--model bicubic of hndsr 2.1.0 or later)", file=sys.stderr)
        return 1
    if not args.input.is_dir():
        try:
            written = upscale_file(pipeline, args.input, args.output, options, show_tiles=True)
        except (ImageDecodeError, OSError) as exc:  # the raster errors are ImageDecodeErrors too
            print(f"error: {args.input}: {exc}", file=sys.stderr)
            return 1
        for path in written:
            print(f"wrote {path}")
        return 0
    return _upscale_folder(pipeline, args.input, args.output, options)


def _upscale_folder(pipeline: HNDSRPipeline, root: Path, out: Path, options: UpscaleOptions) -> int:
    sources, failed, written = list_images(root), 0, 0
    for src in tqdm(sources, desc="images", unit="img"):
        try:
            for path in upscale_file(pipeline, src, folder_output(src, root, out), options, False):
                tqdm.write(f"wrote {path}")
            written += 1
        except (ImageDecodeError, OSError) as exc:
            failed += 1
            tqdm.write(f"skipped {src}: {exc}", file=sys.stderr)
    print(f"wrote {written} of {len(sources)} images to {out}" + (f", skipped {failed}" if failed else ""))
    return 1 if failed else 0


def run_export(args: argparse.Namespace) -> int:
    """The ``export-onnx`` command: 0 when every file was written and matches PyTorch within one grey level."""
    from hndsr_model.export import ExportSpec, export_onnx, max_grey_difference
    from hndsr_model.weights import load_weights

    try:
        specs = [ExportSpec(scale, args.tile, args.overlap, args.resolution, args.model, args.consistency)
                 for scale in args.scale]
        model = load_weights(args.weights or WEIGHTS_DIR / VARIANT_FILES[args.model], "cpu")
    except (ValueError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    several = len(specs) > 1
    for spec in specs:
        path = args.output / f"hndsr-{spec.model}-x{spec.scale}.onnx" if several else args.output
        try:
            export_onnx(model, spec, path)
        except OSError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 1
        off = max_grey_difference(model, spec, path)
        if off > 1:
            path.unlink()
            print(f"error: {path}: ONNX Runtime's output is {off} grey levels from PyTorch's; not kept",
                  file=sys.stderr)
            return 1
        side = spec.tile * spec.scale
        print(f"wrote {path} (x{spec.scale}: {spec.tile}x{spec.tile} -> {side}x{side} RGB, "
              f"{path.stat().st_size / 1e6:.1f} MB, {off} grey level{'s' * (off != 1)} from PyTorch at most)")
    return 0
