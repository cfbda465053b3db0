"""The serving sections of ``scripts/benchmark.py`` (run through it; every figure is printed with the load average).

``--serving``: registers the model, starts the real server (``bentoml serve``, as the integration tests do) and
prints, from one run: the model alone (one tile, one batch of tiles), the ratios of HTTP ``/upscale`` end to end
(PNG, JPEG) to the in-process ``upscale`` of the same 256x256 x4 image (timed round-robin, medians), the
in-process ``upscale`` + PNG with 1 and 4 threads, then ``/upscale`` and ``/infer`` driven by 1/4/16/64
concurrent clients (requests/s, p50, p99), and a big scene in process (x2, output megapixels/s).

``--batching``: in process, the micro-batcher (``BATCH_WAIT_MS``) against none, 1 and 4 threads, round-robin.
``--encoders``: each output encoder on a 1024x1024 output (ms, MB, lossless, whether it holds the GIL), with
the alternatives that are installed (fpng, imagecodecs, opencv, simplejpeg).
``--omp``: ``OMP_WAIT_POLICY`` unset/ACTIVE/PASSIVE, each in a fresh process: ``upscale`` on the main thread,
on a worker thread and on four at once (as the server's slots run it), quiet and with one core kept busy by
another process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import numpy as np
import torch
from inprocess_benchmark import Load, big_scene, load_average, model_only, pillow_encode, upscale_load
from PIL import Image

from benchmarks.common import test_image
from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline
from hndsr_model.timing import median_seconds, round_robin_times
from hndsr_service import imaging
from hndsr_service.local_server import local_server
from hndsr_service.model_store import register

SCALE = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving sections (scripts/serving_benchmark.py)")
    group.add_argument("--serving", action="store_true", help="the real server against in-process figures")
    group.add_argument("--batching", action="store_true", help="the micro-batcher against none, in process")
    group.add_argument("--encoders", action="store_true", help="output encoders on a 1024x1024 output")
    group.add_argument("--omp", action="store_true", help="OMP_WAIT_POLICY under CPU contention")
    group.add_argument("--clients", type=int, nargs="*", default=[1, 4, 16, 64], help="none: only the ratios")
    group.add_argument("--ratio-repeats", type=int, default=15,
                       help="round-robin repeats of the HTTP/in-process ratios (0: none)")
    group.add_argument("--in-process-threads", type=int, nargs="*", default=[1, 4],
                       help="threads calling upscale+PNG in process, beside the HTTP clients")
    group.add_argument("--requests-per-client", type=int, default=2,
                       help="requests each concurrent client (and in-process thread) sends, at least 8 in all; "
                            "more on a fast device")
    group.add_argument("--scene-size", type=int,
                       help="LR side of the big scene (x2); default 8192 on cuda, 1024 on cpu; 0: none")
    group.add_argument("--endpoints", nargs="*", choices=["upscale", "infer"], default=["upscale", "infer"],
                       help="the endpoints the clients drive")
    group.add_argument("--upscale-format", choices=["png", "jpeg"], default="png",
                       help="output_format of the clients' /upscale requests")
    group.add_argument("--server-env", nargs="*", default=[], metavar="NAME=VALUE",
                       help="settings for the server, e.g. BATCH_WAIT_MS=5")
    group.add_argument("--gil", action="store_true",
                       help="a dispatch-bound forward beside a thread running Python, per switch interval")
    group.add_argument("--omp-child", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> bool:
    """Run the sections asked for; False when none was (the model benchmark runs instead)."""
    if args.omp_child:
        omp_child(args.device)
        return True
    sections = [section for name, section in (("serving", serving), ("batching", batching),
                                              ("encoders", encoders), ("omp", omp), ("gil", gil))
                if getattr(args, name)]
    for section in sections:
        section(args)
    return bool(sections)


def png(image: np.ndarray) -> bytes:
    """The service's PNG encoder."""
    return imaging.encode(image, "png")


# -- --serving -----------------------------------------------------------------------------------------------


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


# -- --batching ----------------------------------------------------------------------------------------------


def batching(args: argparse.Namespace) -> None:
    base = HNDSRPipeline.from_pretrained(args.weights, device=args.device)
    wait_ms = 5.0
    variants = {"no micro-batcher": HNDSRPipeline(base.model, base.device, batch_wait_ms=0),
                f"micro-batcher {wait_ms:g} ms": HNDSRPipeline(base.model, base.device, batch_wait_ms=wait_ms)}
    image = test_image(256)
    print(f"micro-batching, 256x256 x{SCALE} upscale+PNG in process, {args.device}, tile_batch {base.tile_batch}, "
          f"{args.repeats} rounds round-robin; {load_average()}")
    results: dict[str, dict[int, list[Load]]] = {name: {1: [], 4: []} for name in variants}
    for _ in range(args.repeats):
        for threads in (1, 4):
            for name, pipeline in variants.items():
                results[name][threads].append(upscale_load(pipeline, image, threads, 4 * threads, png))
    for threads in (1, 4):
        for name, loads in results.items():
            rate = statistics.median(load.per_second for load in loads[threads])
            p50 = statistics.median(load.p50_ms for load in loads[threads])
            print(f"  {threads} thread(s), {name:22s} {rate:6.2f} req/s   p50 {p50:7.1f} ms")
    print(load_average())


# -- --encoders ----------------------------------------------------------------------------------------------


def pillow(image: np.ndarray, **options: object) -> Callable[[], bytes]:
    return lambda: pillow_encode(image, **options)


def optional_encoders(image: np.ndarray) -> dict[str, Callable[[], bytes]]:
    """Alternatives measured when their packages are installed (the service does not depend on them)."""
    found: dict[str, Callable[[], bytes]] = {}
    modules = {name: importlib.util.find_spec(name) for name in ("fpng", "imagecodecs", "cv2", "simplejpeg")}
    if modules["fpng"]:
        fpng = importlib.import_module("fpng")
        found["fpng"] = lambda: fpng.from_ndarray(image)
    if modules["imagecodecs"]:
        codecs = importlib.import_module("imagecodecs")
        found["imagecodecs png (libpng) level 1"] = lambda: codecs.png_encode(image, level=1)
    if modules["cv2"]:
        cv2 = importlib.import_module("cv2")
        bgr = np.ascontiguousarray(image[..., ::-1])
        found["opencv png level 1"] = lambda: cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    if modules["simplejpeg"]:
        simplejpeg = importlib.import_module("simplejpeg")
        found["simplejpeg q95"] = lambda: simplejpeg.encode_jpeg(image, quality=95, colorspace="RGB")
    return found


def gil_stall_ms(encode: Callable[[], bytes], calls: int = 10) -> float:
    """Median of how long a thread sleeping 0.2 ms takes to wake while ``encode`` runs: about the encode time
    when the encoder holds the GIL (an event loop stalls as long), well under a millisecond when it does not."""
    late: list[float] = []
    stop = threading.Event()

    def sleeper() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            time.sleep(0.0002)
            late.append(time.perf_counter() - started)

    thread = threading.Thread(target=sleeper)
    thread.start()
    for _ in range(calls):
        encode()
    stop.set()
    thread.join()
    return statistics.median(late) * 1000


def encoders(args: argparse.Namespace) -> None:
    image = HNDSRPipeline.from_pretrained(args.weights, device=args.device).upscale(test_image(256),
                                                                                    UpscaleOptions(SCALE)).image
    candidates = {
        "hndsr png (Up filter + ISA-L 1)": lambda: imaging.encode(image, "png"),
        "pillow png compress_level=1": pillow(image, format="PNG", compress_level=1),
        "hndsr jpeg (Pillow q95)": lambda: imaging.encode(image, "jpeg"),
        "hndsr webp lossless (quality 0)": lambda: imaging.encode(image, "webp"),
        "pillow webp lossless (quality 80)": pillow(image, format="WEBP", lossless=True, method=0),
        **optional_encoders(image),
    }
    print(f"encoders, {image.shape[1]}x{image.shape[0]} super-resolved output, medians of {args.repeats}; "
          f"{load_average()}")
    for name, encode in candidates.items():
        seconds = median_seconds(encode, args.repeats)
        data = encode()
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        exact = "lossless" if np.array_equal(decoded, image) else "lossy"
        print(f"  {name:36s} {seconds * 1000:7.1f} ms  {len(data) / 1e6:5.2f} MB  {exact:8s}  "
              f"GIL stall p50 {gil_stall_ms(encode):5.1f} ms", flush=True)
    print(load_average())


# -- --omp ---------------------------------------------------------------------------------------------------

OMP_CALLS = ("main thread", "worker thread", "4 worker threads")
OMP_POLICIES = ("unset", "ACTIVE", "PASSIVE")


def omp(args: argparse.Namespace) -> None:
    """One process per policy (libgomp reads it when it loads), all loaded at once and asked in turn, call by
    call, so that the shared machine's load falls on every policy alike."""
    children = {policy: omp_process(policy, args.device) for policy in OMP_POLICIES}
    times: dict[tuple[str, str, str], list[float]] = {}
    print(f"OMP_WAIT_POLICY, 256x256 x{SCALE} upscale, {args.device}, {args.repeats} rounds; {load_average()}",
          flush=True)
    try:
        for contention in ("quiet", "busy core"):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if contention != "quiet" else None
            try:
                for _ in range(args.repeats):
                    for call in OMP_CALLS:
                        for policy, child in children.items():
                            assert child.stdin and child.stdout
                            child.stdin.write(call + "\n")
                            child.stdin.flush()
                            times.setdefault((call, contention, policy), []).append(float(child.stdout.readline()))
            finally:
                if spinner:
                    spinner.kill()
                    spinner.wait()
    finally:
        for child in children.values():
            child.kill()
            child.wait()
    print("  median ms per upscale (4 worker threads: wall time / 4, the four at once as the server's slots run)")
    print(f"  {'':30s}" + "".join(f"{policy:>10s}" for policy in OMP_POLICIES))
    for contention in ("quiet", "busy core"):
        for call in OMP_CALLS:
            print(f"  {call + ', ' + contention:30s}" + "".join(
                f"{statistics.median(times[call, contention, policy]) * 1000:10.0f}" for policy in OMP_POLICIES))
    print(load_average())


def omp_process(policy: str, device: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("benchmark.py")), "--omp-child",
                              "--device", device], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout and child.stdout.readline().strip() == "ready"
    return child


def omp_child(device: str) -> None:
    """Answer each call name on stdin with the seconds per upscale it took."""
    pipeline = HNDSRPipeline.from_pretrained(device=device)
    image = test_image(256)
    workers = ThreadPoolExecutor(4)
    calls = {
        "main thread": lambda: pipeline.upscale(image, UpscaleOptions(SCALE)),
        "worker thread": lambda: workers.submit(pipeline.upscale, image, UpscaleOptions(SCALE)).result(),
        "4 worker threads": lambda: [f.result() for f in [workers.submit(pipeline.upscale, image, UpscaleOptions(SCALE))
                                                          for _ in range(4)]],
    }
    per_call = {"main thread": 1, "worker thread": 1, "4 worker threads": 4}
    for call in calls.values():
        call()  # warm-up: every thread's OpenMP team exists
    print("ready", flush=True)
    for line in sys.stdin:
        started = time.perf_counter()
        calls[line.strip()]()
        print((time.perf_counter() - started) / per_call[line.strip()], flush=True)


# -- --gil ---------------------------------------------------------------------------------------------------

GIL_SWITCH_INTERVALS_S = (0.005, 0.001, 0.0002)  # Python's default first


def gil(args: argparse.Namespace) -> None:
    """The operator on an 8x8 input, where PyTorch's per-operator dispatch is the cost (as kernel launches are
    on a GPU): alone, and beside a thread running pure Python half the time (2 ms bursts, as an event loop
    parsing requests), for several interpreter switch intervals. PyTorch lets go of the GIL around every
    operator and must take it back after each (docs/throughput.md, "Where the time goes")."""
    pipeline = HNDSRPipeline.from_pretrained(args.weights, device="cpu")
    operator = pipeline.model.operator
    tile = torch.rand(1, 3, 8, 8)

    def forward() -> None:
        with torch.inference_mode():
            operator.decode(tile, operator.forward_features(tile, 2), 2)

    def python_bursts(stop: threading.Event) -> None:
        while not stop.is_set():
            end = time.perf_counter() + 0.002
            while time.perf_counter() < end:
                pass
            time.sleep(0.002)

    def median_ms() -> float:
        return median_seconds(forward, max(20, args.repeats)) * 1000

    print(f"GIL contention, the operator on an 8x8 input (dispatch-bound), cpu; {load_average()}", flush=True)
    default = sys.getswitchinterval()
    try:
        for interval in GIL_SWITCH_INTERVALS_S:
            sys.setswitchinterval(interval)
            alone = median_ms()
            stop = threading.Event()
            bursts = threading.Thread(target=python_bursts, args=(stop,))
            bursts.start()
            try:
                shared = median_ms()
            finally:
                stop.set()
                bursts.join()
            print(f"  switch interval {interval * 1000:4.1f} ms: alone {alone:6.2f} ms, beside Python half the "
                  f"time {shared:6.2f} ms ({shared / alone:.1f}x)", flush=True)
    finally:
        sys.setswitchinterval(default)
    print(load_average())
