"""Per-scale Y-PSNR/SSIM of bicubic and HNDSR on a folder of HR images, as JSON and Markdown.

``python -m hndsr_model.evaluate --data ../shared/data/rsscn7/val --scales 2 3 4 8 [--ddim-steps 0 10]``
follows the protocol of ``shared/data/README.md`` exactly (top-left crop, Pillow bicubic LR,
uint8 output, ``s``-pixel border, Y channel).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

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


def evaluate(
    pipeline: HNDSRPipeline, images: list[Path], scales: list[int], ddim_steps: list[int], seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """``{scale: {method: {psnr, ssim, grad_ratio}}}`` averaged over ``images``."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for scale in scales:
        rows: dict[str, list[dict[str, float]]] = {}
        for path in images:
            hr, lr = make_pair(load_rgb(path), scale)
            rows.setdefault("bicubic", []).append(score(bicubic_upscale(lr, scale), hr, scale))
            for steps in ddim_steps:
                sr = pipeline.upscale(lr, scale, ddim_steps=steps, seed=seed).image
                rows.setdefault(method_name(steps), []).append(score(sr, hr, scale))
        results[str(scale)] = {method: mean_scores(r) for method, r in rows.items()}
        print(f"x{scale}: " + ", ".join(f"{m} {v['psnr']:.2f} dB" for m, v in results[str(scale)].items()),
              file=sys.stderr, flush=True)
    return results


def method_name(steps: int) -> str:
    return "hndsr" if steps == 0 else f"hndsr+ddim{steps}"


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
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4, 8])
    p.add_argument("--ddim-steps", type=int, nargs="+", default=[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    images = list_images(args.data)[: args.limit or None]
    pipeline = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    results = evaluate(pipeline, images, args.scales, args.ddim_steps, args.seed)
    report = {"images": len(images), "data": str(args.data), "weights_sha256": pipeline.model.sha256,
              "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(markdown_table(results))


if __name__ == "__main__":
    main()
