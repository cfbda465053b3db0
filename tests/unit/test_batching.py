"""Batched tiles and the micro-batcher: the same pixels as one tile at a time, whoever shares the batch,
and cancellation that still stops a request (queued or mid-batch)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from hndsr_model.options import UpscaleOptions
from hndsr_model.pipeline import HNDSRPipeline, InferenceCancelled, ramp, tile_starts
from hndsr_model.quality import y_psnr
from tests.helpers import rgb_image


@pytest.fixture(scope="module")
def pipeline() -> HNDSRPipeline:
    return HNDSRPipeline.from_pretrained(device="cpu")


def variant(pipeline: HNDSRPipeline, **options: float) -> HNDSRPipeline:
    """The same loaded model with other tiling/batching options."""
    tiling = {"tile_size": pipeline.tile_size, "tile_overlap": pipeline.tile_overlap}
    return HNDSRPipeline(pipeline.model, pipeline.device, **{**tiling, **options})  # type: ignore[arg-type]


def one_tile_at_a_time(pipeline: HNDSRPipeline, image: np.ndarray, scale: int) -> np.ndarray:
    """The reference: each tile through the operator alone, copied to the host, blended there in float64
    (the pipeline's algorithm before tiles were batched and kept on the device)."""
    height, width = image.shape[:2]
    size, overlap, fade = pipeline.tile_size, pipeline.tile_overlap, pipeline.tile_overlap * scale
    th, tw = min(size, height), min(size, width)
    lr = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    sums = np.zeros((3, height * scale, width * scale))
    weights = np.zeros((height * scale, width * scale))
    with torch.inference_mode():
        for y in tile_starts(height, size, overlap):
            for x in tile_starts(width, size, overlap):
                sr = pipeline.model.operator(lr[None, :, y : y + th, x : x + tw], scale)[0].double().numpy()
                wy = ramp(th * scale, fade if y else 0, fade if y + th < height else 0).double().numpy()
                wx = ramp(tw * scale, fade if x else 0, fade if x + tw < width else 0).double().numpy()
                w = wy[:, None] * wx[None, :]
                sums[:, y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += sr * w
                weights[y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += w
    out = np.clip(sums / weights, 0, 1) * 255
    return np.rint(out).astype(np.uint8).transpose(1, 2, 0)


def test_batched_tiles_on_the_device_give_todays_pixels(pipeline: HNDSRPipeline) -> None:
    image, scale = rgb_image(150, 170, seed=5), 3
    tiled = variant(pipeline, tile_size=48, tile_overlap=8, tile_batch=3)  # 4 x 5 tiles: full and partial batches
    reference = one_tile_at_a_time(tiled, image, scale)
    result = tiled.upscale(image, UpscaleOptions(scale, consistency=False))  # the network's pixels, as the reference
    assert result.tiles == 20
    assert np.abs(result.image.astype(int) - reference).max() <= 1
    hr = np.asarray(rgb_image(450, 510, seed=5))  # any fixed target: the two PSNRs must agree to 0.01 dB
    assert abs(y_psnr(result.image, hr, scale) - y_psnr(reference, hr, scale)) <= 0.01


@pytest.mark.parametrize("steps", [0, 3])
def test_batch_size_does_not_change_the_output(pipeline: HNDSRPipeline, steps: int) -> None:
    image = rgb_image(100, 100, seed=2)
    options = UpscaleOptions(2, ddim_steps=steps, seed=11)
    outputs = [variant(pipeline, tile_size=40, tile_overlap=6, tile_batch=batch).upscale(image, options)
               for batch in (1, 2, 8)]
    for other in outputs[1:]:
        assert np.abs(other.image.astype(int) - outputs[0].image).max() <= 1


def test_streamed_rows_hold_one_tile_row(pipeline: HNDSRPipeline) -> None:
    """upscale_rows reads the next tile row only after the band before it was handed over."""
    tiled = variant(pipeline, tile_size=32, tile_overlap=4)
    lr = torch.from_numpy(rgb_image(90, 40).copy()).permute(2, 0, 1).float() / 255
    events: list[str] = []

    def read_rows(y0: int, y1: int) -> torch.Tensor:
        events.append("read")
        return lr[:, y0:y1]

    for _, band in tiled.upscale_rows(read_rows, 90, 40, UpscaleOptions(2)):
        events.append("band")
        assert band.device.type == "cpu" and band.dtype == torch.float32
    assert events == ["read", "band"] * len(tile_starts(90, 32, 4))


def concurrently(*calls) -> list:
    """Run the calls in threads started together; their results (or exceptions) in order."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("steps", [0, 4])
def test_micro_batched_output_does_not_depend_on_batch_mates(pipeline: HNDSRPipeline, steps: int) -> None:
    images = [rgb_image(64, 64, seed=s) for s in range(3)]
    alone = [pipeline.upscale(image, UpscaleOptions(4, ddim_steps=steps, seed=7)).image for image in images]
    # Three one-tile requests, a batch of three tiles: it runs as soon as it is full.
    batched = variant(pipeline, tile_batch=3, batch_wait_ms=2000)
    options = UpscaleOptions(4, ddim_steps=steps, seed=7)
    results = concurrently(*(lambda image=image: batched.upscale(image, options) for image in images))
    assert batched.batcher is not None and (batched.batcher.batches, batched.batcher.tiles) == (1, 3)
    for result, expected in zip(results, alone, strict=True):
        assert np.abs(result.image.astype(int) - expected).max() <= 1


def test_requests_of_other_shapes_or_scales_do_not_share_a_batch(pipeline: HNDSRPipeline) -> None:
    batched = variant(pipeline, tile_batch=4, batch_wait_ms=50)
    concurrently(lambda: batched.upscale(rgb_image(32, 32), UpscaleOptions(2)),
                 lambda: batched.upscale(rgb_image(32, 32), UpscaleOptions(3)),
                 lambda: batched.upscale(rgb_image(40, 32), UpscaleOptions(2)))
    assert batched.batcher is not None and batched.batcher.batches == 3


def test_a_request_cancelled_while_queued_leaves_without_running(pipeline: HNDSRPipeline) -> None:
    batched = variant(pipeline, tile_batch=8, batch_wait_ms=60_000)  # the lone request would wait a minute
    asked = time.monotonic()
    with pytest.raises(InferenceCancelled, match="before tile 1/1"):
        batched.upscale(rgb_image(32, 32), UpscaleOptions(2), should_cancel=lambda: time.monotonic() - asked > 0.2)
    assert batched.batcher is not None and batched.batcher.batches == 0


def test_a_request_cancelled_mid_batch_leaves_at_the_next_step(pipeline: HNDSRPipeline) -> None:
    image, other = rgb_image(48, 48, seed=1), rgb_image(48, 48, seed=2)
    expected = pipeline.upscale(other, UpscaleOptions(2, ddim_steps=12, seed=3)).image
    batch_sizes: list[int] = []  # of every denoiser call
    hook = pipeline.model.denoiser.register_forward_hook(lambda _m, args, _out: batch_sizes.append(args[0].shape[0]))
    try:
        batched = variant(pipeline, tile_batch=2, batch_wait_ms=2000)
        cancelled, kept = concurrently(
            lambda: batched.upscale(image, UpscaleOptions(2, ddim_steps=12, seed=3),
                                    should_cancel=lambda: len(batch_sizes) >= 2),
            lambda: batched.upscale(other, UpscaleOptions(2, ddim_steps=12, seed=3)))
    finally:
        hook.remove()
    assert isinstance(cancelled, InferenceCancelled) and "diffusion step 3/12" in str(cancelled)
    assert batch_sizes == [2, 2] + [1] * 10  # its tile left the batch at once; the other's went on
    assert np.abs(kept.image.astype(int) - expected).max() <= 1
