"""The real server with the micro-batcher on: seeds, cancellation and the admission limits still hold."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import encode, rgb_image
from tests.integration.server import Server, serving
from tests.integration.test_server import assert_disconnect_stops_inference, metric_value, overload

pytestmark = pytest.mark.integration

# Two slots whose tiles share batches; three in flight at most.
ENV = {"BATCH_WAIT_MS": "5", "TILE_BATCH": "4", "MAX_CONCURRENT": "2", "MAX_QUEUE_DEPTH": "3",
       "REQUEST_TIMEOUT_S": "120", "RATE_LIMIT_PER_HOUR": "1000"}


@pytest.fixture(scope="module")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(ENV, tmp_path_factory.mktemp("batching") / "server.log") as srv:
        yield srv


def infer(server: Server, image: np.ndarray, seed: int) -> np.ndarray:
    body = {"image": base64.b64encode(encode(image)).decode(), "scale_factor": 2, "ddim_steps": 4, "seed": seed}
    response = httpx.post(f"{server.url}/infer", json=body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["seed"] == seed
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["image"]))))


def test_a_seeded_request_gives_its_pixels_whoever_shares_its_batch(server: Server) -> None:
    images = [rgb_image(64, 64, seed=s) for s in range(3)]  # as many as MAX_QUEUE_DEPTH lets in at once
    alone = infer(server, images[0], seed=9)
    with ThreadPoolExecutor(len(images)) as pool:
        together = list(pool.map(lambda i: infer(server, images[i], seed=9 + i), range(len(images))))
    assert np.abs(together[0].astype(int) - alone).max() <= 1


def test_client_disconnect_stops_batched_inference(server: Server) -> None:
    assert_disconnect_stops_inference(server)


def test_queue_depth_and_slots_hold_under_batching(server: Server) -> None:
    running: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            running.append(metric_value(server, "hndsr_inferences_running"))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        results, shed = overload(server)
    finally:
        done.set()
        sampler.join()
    assert shed.status_code == 503 and shed.json()["error"] == "overloaded"
    assert [status for status, _ in results] == [200, 200, 200]
    assert max(running) == 2  # both slots used, never more
