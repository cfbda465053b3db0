"""Speed of every inference engine in one run on this machine, beside Pillow bicubic and Real-ESRGAN.

    python -m benchmarks speed [--repeats 7] [--scene 1024] [--scene-repeats 3] [--no-http] [--inductor]
                               [--json FILE]

1. x4 of a 256x256 held-out image to 1024x1024: Pillow bicubic, Real-ESRGAN realesr-animevideov3 (when installed)
   and HNDSR's in-process ``upscale`` on each installed engine, timed in turn (round-robin), medians and CPU
   seconds, each with its ratio to Real-ESRGAN and to PyTorch eager; ``--inductor`` adds TorchInductor
   (``torch.compile`` of the eager operator, compiled before timing, its compile time printed; not an engine the
   service offers: ONNX Runtime was faster here and builds in seconds, not half a minute per shape).
2. A ``--scene`` x ``--scene`` image at x4 on each engine: tiles per second, what a scene job's worker does.
3. HTTP ``/upscale`` (PNG) of the same image on the real server with ``INFERENCE_ENGINE=auto``, timed in turn with
   the in-process call on the same engine and with Real-ESRGAN.

Ends with the speed issue's targets (HTTP <= 0.65x Real-ESRGAN, a scene's tiles/s >= 1.5x PyTorch's, HTTP <= 1.10x
in-process), each said met or not, and the load average beside every section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from hndsr_model.engines import GraphEngine, GraphRun, TorchEngine
from hndsr_model.options import ENGINES, UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import round_robin_times
from hndsr_model.weights import LoadedModel
from hndsr_service import imaging

from .common import load_average, mosaic, realesrgan_peer, test_image

X4 = UpscaleOptions(4)
PEER = "realesrgan_animevideov3"
Peer = Callable[[np.ndarray], object]


class OpenVinoEngine(GraphEngine):
    """The service's ONNX graphs in OpenVINO, for this measurement only: slower than ONNX Runtime here, and each
    compiled graph keeps its largest run's memory (0.8 GB after x8 at a batch of 2, and more at larger batches),
    which the service could not give back. f32: its default bf16 on this CPU moved the output by 3 grey levels."""

    name = "openvino"

    def _load(self, path: Path) -> GraphRun:
        import openvino

        compiled = openvino.Core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        return lambda lr: tuple(compiled.create_infer_request().infer({0: lr}).values())


class InductorEngine(TorchEngine):
    """PyTorch eager's operator through ``torch.compile`` (TorchInductor), for this measurement only."""

    name = "inductor"

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self._compiled = torch.compile(super().__call__, dynamic=False)

    def __call__(self, lr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._compiled(lr, scale)


def pipelines() -> dict[str, HNDSRPipeline]:
    """One pipeline per engine on the same weights (the service's, and OpenVINO where the extra ``bench`` is
    installed), each engine's graph loaded before timing."""
    base = HNDSRPipeline.from_pretrained(device="cpu", engine="torch")
    engines = {name: HNDSRPipeline(base.model, base.device, engine=name) for name in ENGINES[1:]}
    if importlib.util.find_spec("openvino"):
        engines["openvino"] = HNDSRPipeline(base.model, base.device, engine="torch")
        engines["openvino"].engine = OpenVinoEngine(base.model, base.tile_size)
    for pipeline in engines.values():
        pipeline.engine.prepare([X4.scale])
    return engines


def with_inductor(engines: dict[str, HNDSRPipeline]) -> dict[str, HNDSRPipeline]:
    compiled = HNDSRPipeline(engines["torch"].model, engines["torch"].device, engine="torch")
    compiled.engine = InductorEngine(compiled.model)
    started = time.perf_counter()
    compiled.upscale(test_image(256), X4)
    print(f"TorchInductor compiled x4 of one 256x256 tile in {time.perf_counter() - started:.1f} s", flush=True)
    return {**engines, "inductor": compiled}


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in times.items()}


def print_rows(title: str, seconds: dict[str, float], cpu: dict[str, float] | None = None) -> None:
    print(f"{title} ({load_average()})")
    print(f"  {'':32s} {'median':>9s} {'CPU s':>7s} {'/ Real-ESRGAN':>14s} {'/ torch':>8s}")
    for name, value in seconds.items():
        peer = f"{value / seconds[PEER]:14.2f}" if PEER in seconds else f"{'-':>14s}"
        torch_ratio = f"{value / seconds['torch']:8.2f}" if "torch" in seconds else f"{'-':>8s}"
        cpu_s = f"{cpu[name]:7.3f}" if cpu and name in cpu else f"{'-':>7s}"
        print(f"  {name:32s} {value:8.3f}s {cpu_s} {peer} {torch_ratio}", flush=True)


def model_speed(engines: dict[str, HNDSRPipeline], peer: Peer | None, repeats: int) -> dict[str, float]:
    image = test_image(256)
    pil = Image.fromarray(image)
    calls: dict[str, Callable[[], object]] = {"pillow_bicubic": lambda: pil.resize((1024, 1024), Image.BICUBIC)}
    if peer is not None:
        calls[PEER] = lambda: peer(image)
    calls.update({name: (lambda p=p: p.upscale(image, X4)) for name, p in engines.items()})
    wall = medians(round_robin_times(calls, repeats))
    cpu = medians(round_robin_times(calls, repeats, clock=time.process_time))
    print_rows(f"x4 of 256x256 -> 1024x1024, in process, median of {repeats} in turn", wall, cpu)
    return wall


def scene_speed(engines: dict[str, HNDSRPipeline], side: int, repeats: int) -> dict[str, float]:
    image = mosaic(side)
    tiles = next(iter(engines.values())).count_tiles(side, side)
    times = medians(round_robin_times({name: (lambda p=p: p.upscale(image, X4)) for name, p in engines.items()},
                                      repeats))
    rates = {name: tiles / seconds for name, seconds in times.items()}
    print(f"scene {side}x{side} x4 ({tiles} tiles), median of {repeats} in turn ({load_average()})")
    for name, rate in rates.items():
        print(f"  {name:32s} {times[name]:8.2f} s  {rate:6.2f} tiles/s  {rate / rates['torch']:5.2f}x torch",
              flush=True)
    return rates


def http_speed(engines: dict[str, HNDSRPipeline], peer: Peer | None, repeats: int) -> dict[str, float]:
    """HTTP ``/upscale`` timed in turn with the in-process call on the server's own engine (the pipeline of
    ``engines`` that runs it) and with the peer."""
    from hndsr_service.local_server import local_server
    from hndsr_service.model_store import register

    register()  # the server loads the model (and its engine graphs) from the BentoML store, as scripts/serve does
    image = test_image(256)
    upload = imaging.encode(image, "png")
    with tempfile.TemporaryDirectory(prefix="hndsr-speed-") as tmp:
        env = {"RATE_LIMIT_PER_HOUR": "1000000000", "REQUEST_TIMEOUT_S": "600", "JOBS_DIR": tmp}
        with local_server(env, Path(tmp) / "server.log") as (url, _), httpx.Client(base_url=url, timeout=600) as client:
            engine = client.get("/version").json()["engine"]

            def post() -> bytes:
                response = client.post("/upscale", files={"image": ("in.png", upload, "image/png")},
                                       data={"scale_factor": "4", "output_format": "png"})
                response.raise_for_status()
                return response.content

            in_process, http = f"in_process_{engine}", f"http_upscale_png_{engine}"
            calls: dict[str, Callable[[], object]] = {in_process: lambda: engines[engine].upscale(image, X4)}
            if peer is not None:
                calls[PEER] = lambda: peer(image)
            calls[http] = post
            times = round_robin_times(calls, repeats)
    seconds = medians(times)
    print_rows(f"HTTP /upscale x4 of 256x256 (server engine {engine}) and in process, median of {repeats} in turn",
               seconds)
    # The ratio within each round, where the two calls ran a moment apart: a drifting load moves it less.
    in_a_round = statistics.median(h / i for h, i in zip(times[http], times[in_process], strict=True))
    seconds["ratio_http_over_in_process_in_a_round"] = in_a_round
    print(f"  HTTP / in process, median of the ratios within a round: {in_a_round:.3f}")
    return seconds


def targets(model: dict[str, float], scene: dict[str, float], http: dict[str, float]) -> dict[str, float]:
    found: dict[str, float] = {}
    http_name = next((name for name in http if name.startswith("http_")), None)
    in_process = next((name for name in http if name.startswith("in_process_")), None)
    if http_name and PEER in http:
        found["http_over_realesrgan"] = http[http_name] / http[PEER]
    if scene and len(scene) > 1:
        found["scene_tiles_per_s_over_torch"] = max(scene.values()) / scene["torch"]
    if http_name and in_process:
        found["http_over_in_process"] = http[http_name] / http[in_process]
    limits = {"http_over_realesrgan": ("<=", 0.65), "scene_tiles_per_s_over_torch": (">=", 1.5),
              "http_over_in_process": ("<=", 1.10)}
    print("targets:")
    for name, value in found.items():
        sign, limit = limits[name]
        met = value <= limit if sign == "<=" else value >= limit
        print(f"  {name:32s} {value:6.2f}  (target {sign} {limit}: {'met' if met else 'NOT met'})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speed", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the x4 256x256 calls")
    parser.add_argument("--scene", type=int, default=1024, help="the scene's side (0: no scene section)")
    parser.add_argument("--scene-repeats", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="no server section")
    parser.add_argument("--inductor", action="store_true", help="also TorchInductor in the first section")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    engines = pipelines()
    print(f"engines: {', '.join(engines)}; {load_average()}", flush=True)
    peer = realesrgan_peer()  # loaded once, for both sections
    model = model_speed(with_inductor(engines) if args.inductor else engines, peer, args.repeats)
    scene = scene_speed(engines, args.scene, args.scene_repeats) if args.scene else {}
    http = {} if args.no_http else http_speed(engines, peer, args.repeats)
    found = targets(model, scene, http)
    if args.json:
        args.json.write_text(json.dumps({"model_s": model, "scene_tiles_per_s": scene, "http_s": http,
                                         "targets": found, "load_average": load_average()}, indent=1) + "\n")
    return 0
