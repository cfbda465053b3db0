"""Per-scale Y-PSNR/SSIM of bicubic and HNDSR on a folder of HR images, as JSON and Markdown.

``python -m hndsr_model.evaluate --data ../shared/data/rsscn7/val --scales 2 3 4 8 [--ddim-steps 0 10]``
follows the protocol of ``shared/data/README.md`` exactly (top-left crop, Pillow bicubic LR,
uint8 output, ``s``-pixel border, Y channel). ``--weights A B`` compares several weights in one run
(methods named ``hndsr-<version>``). ``--degradation realistic`` makes the LR with the training's
realistic pipeline instead (seeded per image and scale, so every method sees the same LR).

``--real-pairs ../shared/data/geotiff`` scores the real Landsat-8 -> Sentinel-2 pairs (x3) instead:
each output's radiometry is matched to the Sentinel-2 reference per channel by least squares (gain
and offset, as a sensor calibration would), rounded to uint8, then Y-PSNR/SSIM with a 3-pixel border.
``--register 4`` first co-registers each pair (the two satellites' grids are offset by whole pixels). Beside
them, the scores the Sentinel-2 community uses on real pairs (``quality.py``, after ESA's opensr-test): reflectance
consistency with the Landsat-8 input (the output averaged back to its grid; grey levels), the spectral angle to the
reference (degrees), and the shares of input pixels improved, omitted and hallucinated.

``--uncertainty`` scores the uncertainty map instead (per scale and ``--ddim-steps``): Spearman's rho
between sigma and the output's absolute luma error, per image and pooled, beside the same for the
output's own gradient magnitude (the trivial baseline); the share of pixels whose error lies within
2 sigma; and the mean error of the 10 % most uncertain pixels over that of the 10 % least.
``--time-tile N`` adds each method's median time for one 256x256 x4 tile (N repeats, this machine).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import degradation
from .consistency import project
from .data import bicubic_upscale, list_images, load_rgb, make_pair
from .options import DEFAULT_UNCERTAINTY_SAMPLES, UpscaleOptions
from .pipeline import HNDSRPipeline
from .quality import (
    correctness,
    gmsd,
    gradient_energy_ratio,
    reflectance_consistency,
    spearman,
    spectral_angle,
    y_psnr,
    y_ssim,
)
from .timing import round_robin_seconds
from .uncertainty import LUMA
from .weights import DEFAULT_WEIGHTS

# --consistency: which of without / with the LR-consistency projection each method is scored.
PROJECTIONS = {"off": [False], "on": [True], "both": [False, True]}
POOLED_STRIDE = 7  # every 7th pixel of every image goes into the pooled Spearman


def score(output: np.ndarray, hr: np.ndarray, lr: np.ndarray, scale: int) -> dict[str, float]:
    return {
        "psnr": y_psnr(output, hr, scale),
        "ssim": y_ssim(output, hr, scale),
        "grad_ratio": gradient_energy_ratio(output, hr, scale),
        "gmsd": gmsd(output, hr, scale),
        "consistency": reflectance_consistency(output, lr, scale),
    }


def projected_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The Pillow bicubic baseline with the LR-consistency projection, as uint8."""
    up = torch.from_numpy(np.array(bicubic_upscale(lr, scale))).permute(2, 0, 1)[None].float()  # a writable copy
    low = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float()
    return project(up, low, scale)[0].clamp(0, 255).round().permute(1, 2, 0).to(torch.uint8).numpy()


def baselines(lr: np.ndarray, scale: int, projections: list[bool]) -> dict[str, np.ndarray]:
    """``bicubic``, and with the projection ``bicubic+consistency``, as ``projections`` ask."""
    made = {False: lambda: bicubic_upscale(lr, scale), True: lambda: projected_bicubic(lr, scale)}
    return {method_name("bicubic", 0, projected): made[projected]() for projected in projections}


def luma01(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 RGB image in [0, 1] units, the uncertainty map's unit."""
    return rgb.astype(np.float64) @ np.array(LUMA) / 255


def uncertainty_scores(output: np.ndarray, sigma: np.ndarray, hr: np.ndarray, border: int
                       ) -> tuple[dict[str, float], np.ndarray]:
    """One image's scores of the map (see the module's docstring) and its pooled sample ``(3, n)``:
    sigma, gradient magnitude, absolute error."""
    crop = (slice(border, -border), slice(border, -border))
    y = luma01(output)
    error = np.abs(y - luma01(hr))[crop]
    gradient = np.hypot(*np.gradient(y))[crop]
    sigma = sigma[crop].astype(np.float64)
    order = sigma.ravel().argsort()
    tenth = max(1, order.size // 10)
    flat = error.ravel()
    scores = {"spearman": spearman(sigma, error), "spearman_gradient": spearman(gradient, error),
              "coverage_2sigma": float(np.mean(error <= 2 * sigma)),
              "top_bottom_error_ratio": float(flat[order[-tenth:]].mean() / max(flat[order[:tenth]].mean(), 1e-12)),
              "mean_sigma": float(sigma.mean()), "rms_error": float(np.sqrt(np.mean(error**2)))}
    pooled = np.stack([sigma.ravel(), gradient.ravel(), flat])[:, ::POOLED_STRIDE]
    return scores, pooled


def evaluate_uncertainty(pipeline: HNDSRPipeline, images: list[Path], scales: list[int], ddim_steps: list[int],
                         seed: int, samples: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{scale: {ddim<steps>: scores}}``: per-image scores averaged, Spearman also pooled over all images."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scale in scales:
        results[str(scale)] = {}
        for steps in ddim_steps:
            rows, pooled = [], []
            for path in images:
                hr, lr = make_pair(load_rgb(path), scale)
                # The map is calibrated on the network's own output: scored against that, unprojected.
                options = UpscaleOptions(scale, ddim_steps=steps, seed=seed, uncertainty=True, consistency=False,
                                         uncertainty_samples=samples)
                out = pipeline.upscale(lr, options)
                assert out.uncertainty is not None
                row, sample = uncertainty_scores(out.image, out.uncertainty, hr, scale)
                rows.append(row)
                pooled.append(sample)
            everything = np.concatenate(pooled, axis=1)
            results[str(scale)][f"ddim{steps}"] = {
                **mean_scores(rows), "spearman_pooled": round(spearman(everything[0], everything[2]), 4),
                "spearman_gradient_pooled": round(spearman(everything[1], everything[2]), 4)}
            print(f"x{scale} ddim {steps}: {results[str(scale)][f'ddim{steps}']}", file=sys.stderr, flush=True)
    return results


def tile_seconds(pipelines: dict[str, HNDSRPipeline], ddim_steps: list[int], repeats: int, seed: int,
                 image: np.ndarray) -> dict[str, float]:
    """Median seconds of one 256x256 x4 tile per method (and with its uncertainty map, where there is a head),
    without the LR-consistency projection, timed round-robin so that a shared machine's load falls on every method
    alike."""
    tile = np.ascontiguousarray(image[:256, :256])  # as an LR input: 1024x1024 out
    calls = {}
    for name, pipeline in pipelines.items():
        for steps in ddim_steps:
            options = [False, True] if pipeline.has_uncertainty else [False]
            for mapped in options:
                label = method_name(name, steps) + ("+uncertainty" if mapped else "")
                calls[label] = functools.partial(pipeline.upscale, tile, UpscaleOptions(
                    4, ddim_steps=steps, seed=seed, uncertainty=mapped, consistency=False))
    return {label: round(seconds, 3) for label, seconds in round_robin_seconds(calls, repeats).items()}


def mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}


def degraded_pair(hr: np.ndarray, scale: int, mode: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The protocol pair, or with ``mode == "realistic"`` the same HR crop with a realistic LR."""
    hr, lr = make_pair(hr, scale)
    if mode == "realistic":
        generator = torch.Generator().manual_seed(seed * 1_000_003 + scale)
        tensor = torch.from_numpy(hr.copy()).permute(2, 0, 1)[None].float()
        lr = degradation.realistic(tensor, scale, generator)[0].permute(1, 2, 0).to(torch.uint8).numpy()
    return hr, lr


def evaluate(
    pipelines: dict[str, HNDSRPipeline], images: list[Path], scales: list[int], ddim_steps: list[int], seed: int,
    mode: str = "bicubic", projections: list[bool] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{scale: {method: {psnr, ssim, grad_ratio, gmsd, consistency}}}`` averaged over ``images``, each method
    without and/or with the LR-consistency projection as ``projections`` lists (default: without)."""
    projections = projections or [False]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scale in scales:
        rows: dict[str, list[dict[str, float]]] = {}
        for index, path in enumerate(images):
            hr, lr = degraded_pair(load_rgb(path), scale, mode, seed + index)
            for method, out in baselines(lr, scale, projections).items():
                rows.setdefault(method, []).append(score(out, hr, lr, scale))
            for name, pipeline in pipelines.items():
                for steps, projected in itertools.product(ddim_steps, projections):
                    options = UpscaleOptions(scale, ddim_steps=steps, seed=seed, consistency=projected)
                    sr = pipeline.upscale(lr, options).image
                    rows.setdefault(method_name(name, steps, projected), []).append(score(sr, hr, lr, scale))
        results[str(scale)] = {method: mean_scores(r) for method, r in rows.items()}
        print(f"x{scale}: " + ", ".join(f"{m} {v['psnr']:.2f} dB" for m, v in results[str(scale)].items()),
              file=sys.stderr, flush=True)
    return results


def radiometric_match(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel least-squares gain and offset mapping ``output`` onto ``reference``, as uint8."""
    matched = np.empty(output.shape, np.float64)
    for c in range(output.shape[2]):
        x = output[..., c].astype(np.float64).ravel()
        design = np.stack([x, np.ones_like(x)], axis=1)
        gain, offset = np.linalg.lstsq(design, reference[..., c].astype(np.float64).ravel(), rcond=None)[0]
        matched[..., c] = gain * output[..., c] + offset
    return np.clip(np.round(matched), 0, 255).astype(np.uint8)


def best_shift(output: np.ndarray, reference: np.ndarray, border: int, max_shift: int) -> tuple[int, int]:
    """The whole-pixel ``(dy, dx)`` within ``max_shift`` that best matches ``output`` to ``reference`` (Y-PSNR)."""
    shifts = [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)]
    return max(shifts, key=lambda s: y_psnr(radiometric_match(np.roll(output, s, (0, 1)), reference), reference,
                                            border + max_shift))


def evaluate_real_pairs(
    pipelines: dict[str, HNDSRPipeline], folder: Path, scale: int = 3, register: int = 0,
    projections: list[bool] | None = None,
) -> dict[str, dict]:
    """``{scene: {method: {psnr, ssim, ...}}}`` and their mean, for ``scene_*_Landsat-8.tif`` / ``*_Sentinel-2.tif``;
    each method without and/or with the LR-consistency projection as ``projections`` lists (default: without).

    ``register > 0`` first co-registers each pair: the whole-pixel shift (up to ``register`` px) that best
    aligns the bicubic output with the reference is applied to every method's output alike, and the
    border grows by ``register`` px so no wrapped pixel is scored.
    """
    projections = projections or [False]
    results: dict[str, dict[str, dict[str, float]]] = {}
    border = scale + register
    for low_path in sorted(Path(folder).glob("scene_*_Landsat-8.tif")):
        scene = low_path.name.removesuffix("_Landsat-8.tif")
        lr, hr = load_rgb(low_path), load_rgb(low_path.with_name(f"{scene}_Sentinel-2.tif"))
        outputs = baselines(lr, scale, projections)
        for (name, pipeline), projected in itertools.product(pipelines.items(), projections):
            options = UpscaleOptions(scale, consistency=projected)
            outputs[method_name(name, 0, projected)] = pipeline.upscale(lr, options).image
        lr_up = bicubic_upscale(lr, scale)
        shift = best_shift(lr_up, hr, scale, register) if register else (0, 0)
        results[scene] = {}
        lr_up_as_hr = radiometric_match(np.roll(lr_up, shift, (0, 1)), hr)
        for method, out in outputs.items():
            matched = radiometric_match(np.roll(out, shift, (0, 1)), hr)
            scores = {"psnr": y_psnr(matched, hr, border), "ssim": y_ssim(matched, hr, border),
                      "consistency": reflectance_consistency(out, lr, scale),
                      "sam_deg": spectral_angle(matched, hr, border),
                      **correctness(out, lr_up, hr, matched, lr_up_as_hr, scale)}
            results[scene][method] = {name: round(value, 4) for name, value in scores.items()}
        if register:
            results[scene]["shift_px"] = {"dy": shift[0], "dx": shift[1]}
    methods = [m for m in next(iter(results.values())) if m != "shift_px"]
    results["mean"] = {m: mean_scores([results[s][m] for s in results]) for m in methods}
    return results


def method_name(name: str, steps: int, projected: bool = False) -> str:
    return name + (f"+ddim{steps}" if steps else "") + ("+consistency" if projected else "")


def real_pairs_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """The mean over the pairs, a method a row."""
    lines = ["| method | Y-PSNR (dB) | SSIM | consistency (grey levels) | spectral angle (deg) | improved % | "
             "omitted % | hallucinated % |", "|---|---|---|---|---|---|---|---|"]
    for method, m in results["mean"].items():
        lines.append(f"| {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['consistency']:.2f} | {m['sam_deg']:.2f} | "
                     f"{m['improvement_pct']:.1f} | {m['omission_pct']:.1f} | {m['hallucination_pct']:.1f} |")
    return "\n".join(lines)


def markdown_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| scale | method | Y-PSNR (dB) | SSIM | grad. energy / HR | GMSD | consistency (grey levels) | "
             "vs bicubic (dB) |", "|---|---|---|---|---|---|---|---|"]
    for scale, methods in results.items():
        base = methods[next(iter(methods))]["psnr"]
        for method, m in methods.items():
            lines.append(f"| x{scale} | {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['grad_ratio']:.3f} | "
                         f"{m['gmsd']:.4f} | {m['consistency']:.2f} | {m['psnr'] - base:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="folder of HR images (the protocol's evaluation)")
    p.add_argument("--real-pairs", type=Path, help="folder with scene_*_Landsat-8.tif / scene_*_Sentinel-2.tif")
    p.add_argument("--register", type=int, default=0, metavar="PX",
                   help="with --real-pairs: co-register each pair first (whole-pixel shifts up to PX)")
    p.add_argument("--weights", type=Path, nargs="+", default=[DEFAULT_WEIGHTS])
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4, 8])
    p.add_argument("--ddim-steps", type=int, nargs="+", default=[0])
    p.add_argument("--degradation", choices=["bicubic", "realistic"], default="bicubic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    p.add_argument("--every", type=int, default=1, help="evaluate every Nth image (a quick subset of all classes)")
    p.add_argument("--device", default="auto")
    p.add_argument("--uncertainty", action="store_true", help="score the uncertainty map (first --weights only)")
    p.add_argument("--uncertainty-samples", type=int, default=DEFAULT_UNCERTAINTY_SAMPLES,
                   help="diffusion samples behind the map when --ddim-steps > 0")
    p.add_argument("--time-tile", type=int, default=0, metavar="N",
                   help="also time one 256x256 x4 tile per method, median of N")
    p.add_argument("--consistency", choices=sorted(PROJECTIONS), default="off",
                   help="score every method without the LR-consistency projection (off), with it (on) or both")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if (args.data is None) == (args.real_pairs is None):
        p.error("give exactly one of --data and --real-pairs")
    # Full float32 on a GPU too (cuDNN's default is TF32), so that its tables match the CPU's.
    torch.backends.cudnn.allow_tf32 = False
    loaded = [HNDSRPipeline.from_pretrained(w, device=args.device) for w in args.weights]
    names = ["hndsr"] if len(loaded) == 1 else [f"hndsr-{p.version}" for p in loaded]
    if len(set(names)) < len(names):
        names = [f"hndsr-{p.version}-{p.model.sha256[:8]}" for p in loaded]
    pipelines = dict(zip(names, loaded, strict=True))
    weights = {name: {"path": str(w), "sha256": p.model.sha256, "version": p.version}
               for (name, p), w in zip(pipelines.items(), args.weights, strict=True)}
    if args.real_pairs:
        report = {"data": str(args.real_pairs), "scale": 3, "weights": weights,
                  "protocol": "per-channel least-squares gain/offset to the reference, uint8, Y, 3-px border"
                              + (f"; co-registered (shifts up to {args.register} px, border +{args.register})"
                                 if args.register else ""),
                  "results": evaluate_real_pairs(pipelines, args.real_pairs, register=args.register,
                                                 projections=PROJECTIONS[args.consistency])}
    else:
        images = list_images(args.data)[:: args.every][: args.limit or None]
        if args.uncertainty:
            results = evaluate_uncertainty(loaded[0], images, args.scales, args.ddim_steps, args.seed,
                                           args.uncertainty_samples)
        else:
            results = evaluate(pipelines, images, args.scales, args.ddim_steps, args.seed, args.degradation,
                               PROJECTIONS[args.consistency])
        report = {"images": len(images), "data": str(args.data), "degradation": args.degradation,
                  "weights": weights, "results": results}
        if args.uncertainty:
            report["uncertainty_samples"] = args.uncertainty_samples
        if args.time_tile:
            report["tile_seconds"] = tile_seconds(pipelines, args.ddim_steps, args.time_tile, args.seed,
                                                  load_rgb(images[0]))
            report["tile_seconds_device"] = str(loaded[0].device)
        if len(loaded) == 1:
            report["weights_sha256"] = loaded[0].model.sha256
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.real_pairs:
        print(real_pairs_table(report["results"]))
    elif not args.uncertainty:
        print(markdown_table(report["results"]))


if __name__ == "__main__":
    main()
