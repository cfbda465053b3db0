"""The real server against in-process figures of the same run (registers the model, starts ``bentoml serve``
as the integration tests do).

    OMP_WAIT_POLICY=PASSIVE python -m benchmarks serving [--clients 1 4 16 64] [--ratio-repeats 15] [--scene-size 1024]

Prints, from one run: the model alone (one tile, one batch of tiles), the ratios of HTTP ``/upscale`` end to end
(PNG, JPEG) to the in-process ``upscale`` of the same 256x256 x4 image (timed round-robin, medians), the
in-process ``upscale`` + PNG with 1 and 4 threads, then ``/upscale`` and ``/infer`` driven by 1/4/16/64
concurrent clients (requests/s, p50, p99), and a big scene in process (x2, output megapixels/s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import numpy as np

from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import round_robin_times
from hndsr_service import imaging
from hndsr_service.local_server import local_server
from hndsr_service.model_store import register

from .common import SCALE, Load, big_scene, load_average, model_only, model_parser, test_image, upscale_load
from .common import service_png as png


def serving(args: argparse.Namespace) -> None:
    register()  # the server loads the model from the BentoML store, as scripts/serve does
    pipeline = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    image = test_image(256)
    upload = imaging.encode(image, "png")
    print(f"serving benchmark, {args.device}, tile_batch {pipeline.tile_batch}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; {load_average()}", flush=True)
    model = model_only(pipeline, args.repeats)
    print(f"model only: one 256x256 tile x{SCALE} {model['tile_ms']:.1f} ms; batches of {pipeline.tile_batch}: "
          f"{model['batch_tiles_per_s']:.1f} tiles/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="hndsr-bench-") as tmp:
        env = {"DEVICE": args.device, "MAX_QUEUE_DEPTH": "1000", "RATE_LIMIT_PER_HOUR": "1000000000",
               "REQUEST_TIMEOUT_S": "600", "JOBS_DIR": tmp, **dict(kv.split("=", 1) for kv in args.server_env)}
        with local_server(env, Path(tmp) / "server.log") as (url, _):
            print(f"server up ({' '.join(args.server_env) or 'default settings'}); {load_average()}", flush=True)
            ratio = http_ratios(pipeline, image, upload, url, args.ratio_repeats) if args.ratio_repeats else {}
            in_process = {threads: upscale_load(pipeline, image, threads,
                                                max(8, args.requests_per_client * threads), png)
                          for threads in args.in_process_threads if args.clients}
            for threads, stats in in_process.items():
                print(stats.row(f"in-process upscale+PNG, {threads} thr"), flush=True)
            http = {endpoint: {clients: http_load(url, endpoint, upload, clients, args.requests_per_client,
                                                  args.upscale_format)
                               for clients in args.clients}
                    for endpoint in args.endpoints}
    size = (8192 if pipeline.device.type == "cuda" else 1024) if args.scene_size is None else args.scene_size
    scene = big_scene(pipeline, size) if size else {}
    if scene:
        print(f"big scene {size}x{size} x2 in process: {scene['seconds']:.2f} s, {scene['output_mpx_per_s']:.2f} "
              f"output megapixels/s; {load_average()}")
    print(json.dumps({"device": args.device, "model_only": model, "ratios": ratio,
                      "in_process": {k: asdict(v) for k, v in in_process.items()},
                      "http": {e: {c: asdict(v) for c, v in by.items()} for e, by in http.items()},
                      "big_scene": scene, "load_average": os.getloadavg()}))


def post_upscale(client: httpx.Client, upload: bytes, fmt: str, overheads: list[float]) -> bytes:
    """One ``/upscale``; appends to ``overheads`` the seconds it took beyond the server's own inference time."""
    started = time.perf_counter()
    response = client.post("/upscale", files={"image": ("input.png", upload, "image/png")},
                           data={"scale_factor": str(SCALE), "output_format": fmt})
    response.raise_for_status()
    overheads.append(time.perf_counter() - started - float(response.headers["x-hndsr-latency-ms"]) / 1000)
    return response.content


def http_ratios(pipeline: HNDSRPipeline, image: np.ndarray, upload: bytes, url: str, repeats: int
                ) -> dict[str, float]:
    """In-process ``upscale`` (on the main thread, and on a worker thread as the server runs it) and HTTP
    ``/upscale`` (PNG, JPEG), timed in turn: medians, their ratios to the in-process median, and the median of
    the ratios within a round (which a drifting load on a shared machine disturbs less)."""
    overheads: dict[str, list[float]] = {"png": [], "jpeg": []}
    with httpx.Client(base_url=url, timeout=600) as client, ThreadPoolExecutor(1) as worker:
        times = round_robin_times({
            "in_process_upscale": lambda: pipeline.upscale(image, UpscaleOptions(SCALE)),
            "in_process_upscale_worker": lambda: worker.submit(pipeline.upscale, image, UpscaleOptions(SCALE)).result(),
            "http_upscale_png": lambda: post_upscale(client, upload, "png", overheads["png"]),
            "http_upscale_jpeg": lambda: post_upscale(client, upload, "jpeg", overheads["jpeg"]),
        }, repeats)
    base = times["in_process_upscale"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"256x256 x{SCALE}, {repeats} rounds round-robin ({load_average()}):   median   ratio of medians   "
          "median ratio in a round   (to in-process upscale)")
    figures: dict[str, float] = {}
    for name, values in times.items():
        ratio = medians[name] / medians["in_process_upscale"]
        in_round = statistics.median(t / b for t, b in zip(values, base, strict=True))
        figures.update({f"{name}_ms": medians[name] * 1000, f"{name}_ratio": ratio, f"{name}_round_ratio": in_round})
        print(f"  {name:26s} {medians[name] * 1000:8.1f} ms   {ratio:6.3f}   {in_round:6.3f}", flush=True)
    for fmt, seconds in overheads.items():
        figures[f"http_{fmt}_overhead_ms"] = statistics.median(seconds) * 1000
        print(f"  HTTP {fmt} beyond the server's inference time (decode, encode, HTTP): median "
              f"{figures[f'http_{fmt}_overhead_ms']:.1f} ms")
    return figures


def http_load(url: str, endpoint: str, upload: bytes, clients: int, per_client: int, output_format: str = "png"
              ) -> Load:
    """``clients`` concurrent clients, ``per_client`` requests each (at least eight in all)."""
    if endpoint == "upscale":
        def request(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
            return client.post("/upscale", files={"image": ("input.png", upload, "image/png")},
                               data={"scale_factor": str(SCALE), "output_format": output_format})
    else:
        body = {"image": base64.b64encode(upload).decode(), "scale_factor": SCALE}

        def request(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
            return client.post("/infer", json=body)

    stats = asyncio.run(drive(url, request, clients, max(8, per_client * clients)))
    label = f" {output_format}" if endpoint == "upscale" and output_format != "png" else ""
    print(stats.row(f"HTTP /{endpoint}{label}, {clients} clients") + f"; {load_average()}", flush=True)
    return stats


def reported_inference_ms(response: httpx.Response, body: dict | None) -> float | None:
    """The inference time the server reports: a header of ``/upscale``, ``metadata.latency_ms`` of ``/infer``."""
    if "x-hndsr-latency-ms" in response.headers:
        return float(response.headers["x-hndsr-latency-ms"])
    metadata = (body or {}).get("metadata")
    return float(metadata["latency_ms"]) if metadata else None


async def drive(url: str, request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]], clients: int,
                total: int) -> Load:
    latencies: list[float] = []
    inference_ms: list[float] = []  # what the server reports: its slot-held inference time, without the queue
    errors = 0
    tickets = iter(range(total))  # shared: each request is sent by whichever client is free

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for _ in tickets:
            started = time.perf_counter()
            response = await request(client)
            json_body = response.status_code == 200 and response.headers["content-type"].startswith("application/json")
            body = response.json() if json_body else None  # a JSON client parses what it gets
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200
            if (reported := reported_inference_ms(response, body)) is not None:
                inference_ms.append(reported)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await request(client)  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        load = Load.of(latencies, errors, time.perf_counter() - started)
        return replace(load, server_p50_ms=statistics.median(inference_ms)) if inference_ms else load


def main(argv: list[str] | None = None) -> int:
    parser = model_parser("serving", __doc__)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16, 64], help="none: only the ratios")
    parser.add_argument("--ratio-repeats", type=int, default=15,
                        help="round-robin repeats of the HTTP/in-process ratios (0: none)")
    parser.add_argument("--in-process-threads", type=int, nargs="*", default=[1, 4],
                        help="threads calling upscale+PNG in process, beside the HTTP clients")
    parser.add_argument("--requests-per-client", type=int, default=2,
                        help="requests each concurrent client (and in-process thread) sends, at least 8 in all; "
                             "more on a fast device")
    parser.add_argument("--scene-size", type=int,
                        help="LR side of the big scene (x2); default 8192 on cuda, 1024 on cpu; 0: none")
    parser.add_argument("--endpoints", nargs="*", choices=["upscale", "infer"], default=["upscale", "infer"],
                        help="the endpoints the clients drive")
    parser.add_argument("--upscale-format", choices=["png", "jpeg"], default="png",
                        help="output_format of the clients' /upscale requests")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings for the server, e.g. BATCH_WAIT_MS=5")
    serving(parser.parse_args(argv))
    return 0
