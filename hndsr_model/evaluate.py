"""Per-scale Y-PSNR/SSIM of bicubic and HNDSR on a folder of HR images, as JSON and Markdown.

``python -m hndsr_model.evaluate --data ../shared/data/rsscn7/val --scales 2 3 4 8 [--ddim-steps 0 10]``
follows the protocol of ``shared/data/README.md`` exactly (top-left crop, Pillow bicubic LR,
uint8 output, ``s``-pixel border, Y channel). ``--weights A B`` compares several weights in one run
(methods named ``hndsr-<version>``). ``--degradation realistic`` makes the LR with the training's
realistic pipeline instead (seeded per image and scale, so every method sees the same LR).

``--real-pairs ../shared/data/geotiff`` scores the real Landsat-8 -> Sentinel-2 pairs (x3) instead:
each output's radiometry is matched to the Sentinel-2 reference per channel by least squares (gain
and offset, as a sensor calibration would), rounded to uint8, then Y-PSNR/SSIM with a 3-pixel border.
``--register 4`` first co-registers each pair (the two satellites' grids are offset by whole pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from . import degradation
from .data import bicubic_upscale, list_images, load_rgb, make_pair
from .pipeline import HNDSRPipeline
from .quality import gradient_energy_ratio, y_psnr, y_ssim
from .weights import DEFAULT_WEIGHTS


def score(output: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    return {
        "psnr": y_psnr(output, hr, scale),
        "ssim": y_ssim(output, hr, scale),
        "grad_ratio": gradient_energy_ratio(output, hr, scale),
    }


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
    mode: str = "bicubic",
) -> dict[str, dict[str, dict[str, float]]]:
    """``{scale: {method: {psnr, ssim, grad_ratio}}}`` averaged over ``images``."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scale in scales:
        rows: dict[str, list[dict[str, float]]] = {}
        for index, path in enumerate(images):
            hr, lr = degraded_pair(load_rgb(path), scale, mode, seed + index)
            rows.setdefault("bicubic", []).append(score(bicubic_upscale(lr, scale), hr, scale))
            for name, pipeline in pipelines.items():
                for steps in ddim_steps:
                    sr = pipeline.upscale(lr, scale, ddim_steps=steps, seed=seed).image
                    rows.setdefault(method_name(name, steps), []).append(score(sr, hr, scale))
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
    pipelines: dict[str, HNDSRPipeline], folder: Path, scale: int = 3, register: int = 0
) -> dict[str, dict]:
    """``{scene: {method: {psnr, ssim}}}`` and their mean, for ``scene_*_Landsat-8.tif`` / ``*_Sentinel-2.tif``.

    ``register > 0`` first co-registers each pair: the whole-pixel shift (up to ``register`` px) that best
    aligns the bicubic output with the reference is applied to every method's output alike, and the
    border grows by ``register`` px so no wrapped pixel is scored.
    """
    results: dict[str, dict[str, dict[str, float]]] = {}
    border = scale + register
    for low_path in sorted(Path(folder).glob("scene_*_Landsat-8.tif")):
        scene = low_path.name.removesuffix("_Landsat-8.tif")
        lr, hr = load_rgb(low_path), load_rgb(low_path.with_name(f"{scene}_Sentinel-2.tif"))
        outputs = {"bicubic": bicubic_upscale(lr, scale)}
        outputs.update({method_name(name, 0): p.upscale(lr, scale).image for name, p in pipelines.items()})
        shift = best_shift(outputs["bicubic"], hr, scale, register) if register else (0, 0)
        results[scene] = {}
        for method, out in outputs.items():
            matched = radiometric_match(np.roll(out, shift, (0, 1)), hr)
            results[scene][method] = {"psnr": round(y_psnr(matched, hr, border), 4),
                                      "ssim": round(y_ssim(matched, hr, border), 4)}
        if register:
            results[scene]["shift_px"] = {"dy": shift[0], "dx": shift[1]}
    methods = [m for m in next(iter(results.values())) if m != "shift_px"]
    results["mean"] = {m: mean_scores([results[s][m] for s in results]) for m in methods}
    return results


def method_name(name: str, steps: int) -> str:
    return name if steps == 0 else f"{name}+ddim{steps}"


def markdown_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| scale | method | Y-PSNR (dB) | SSIM | grad. energy / HR | vs bicubic (dB) |",
             "|---|---|---|---|---|---|"]
    for scale, methods in results.items():
        base = methods["bicubic"]["psnr"]
        for method, m in methods.items():
            lines.append(f"| x{scale} | {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | "
                         f"{m['grad_ratio']:.3f} | {m['psnr'] - base:+.2f} |")
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
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if (args.data is None) == (args.real_pairs is None):
        p.error("give exactly one of --data and --real-pairs")
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
                  "results": evaluate_real_pairs(pipelines, args.real_pairs, register=args.register)}
    else:
        images = list_images(args.data)[:: args.every][: args.limit or None]
        results = evaluate(pipelines, images, args.scales, args.ddim_steps, args.seed, args.degradation)
        report = {"images": len(images), "data": str(args.data), "degradation": args.degradation,
                  "weights": weights, "results": results}
        if len(loaded) == 1:
            report["weights_sha256"] = loaded[0].model.sha256
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not args.real_pairs:
        print(markdown_table(report["results"]))


if __name__ == "__main__":
    main()
