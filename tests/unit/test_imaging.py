from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from rasterio.io import MemoryFile

from hndsr_model.data import to_rgb8
from hndsr_model.quality import y_psnr
from hndsr_service import imaging
from hndsr_service.errors import ServiceError
from hndsr_service.imaging import check_output, decode_base64, decode_image, output_format
from hndsr_service.imaging import encode as encode_as
from tests.helpers import DATA, encode, requires_data, rgb_image


def status_of(fn, *args) -> tuple[int, str]:
    with pytest.raises(ServiceError) as info:
        fn(*args)
    return info.value.status, info.value.code


def test_png_jpeg_webp_roundtrip() -> None:
    image = rgb_image(20, 30)
    assert np.array_equal(decode_image(encode(image), 10**6), image)
    assert decode_image(encode(image, "JPEG"), 10**6).shape == (20, 30, 3)
    assert decode_image(encode(image, "WEBP"), 10**6).shape == (20, 30, 3)


def test_base64_with_data_url_prefix_and_newlines() -> None:
    raw = encode(rgb_image())
    text = "data:image/png;base64," + base64.encodebytes(raw).decode()
    assert decode_base64(text) == raw


@pytest.mark.parametrize("text", ["abc!", "abc", "😀"])
def test_bad_base64_is_422(text: str) -> None:
    assert status_of(decode_base64, text) == (422, "invalid_image")


@pytest.mark.parametrize("data", [b"", b"hello world", b"GIF89a" + b"\0" * 20])
def test_not_an_image_is_422(data: bytes) -> None:
    assert status_of(decode_image, data, 10**6) == (422, "invalid_image")


def test_truncated_file_is_422() -> None:
    data = encode(rgb_image(64, 64))
    assert status_of(decode_image, data[: len(data) // 2], 10**6) == (422, "invalid_image")


def test_malformed_png_header_is_422() -> None:
    data = bytearray(encode(rgb_image(64, 64)))
    data[8:12] = struct.pack(">I", 2)  # IHDR chunk claims 2 bytes: Pillow raises ValueError, not OSError
    assert status_of(decode_image, bytes(data), 10**6) == (422, "invalid_image")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` with almost no data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_pixel_bomb_rejected_from_header() -> None:
    assert status_of(decode_image, png_header_only(50_000, 50_000), 16_000_000) == (413, "image_too_large")


def test_output_guard() -> None:
    check_output(100, 100, 8, 640_000)
    assert status_of(check_output, 100, 100, 8, 639_999) == (413, "output_too_large")


def tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def test_tiff_uint16_single_band_and_float_multiband() -> None:
    grey = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 13)
    out = decode_image(tiff_bytes(grey), 10**6)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8 and out.max() == 255
    four = np.random.default_rng(0).random((30, 20, 4))
    assert decode_image(tiff_bytes(four, photometric="rgb"), 10**6).shape == (30, 20, 3)
    planar = np.random.default_rng(0).integers(0, 255, (3, 16, 24), dtype=np.uint8)
    assert decode_image(tiff_bytes(planar, planarconfig="separate", photometric="rgb"), 10**6).shape == (16, 24, 3)


def test_tiff_pixel_guard_reads_header() -> None:
    assert status_of(decode_image, tiff_bytes(np.zeros((200, 200), np.uint8)), 100) == (413, "image_too_large")


@requires_data("geotiff")
@pytest.mark.parametrize("name", ["scene_1_Landsat-8.tif", "spacenet_sample_uint16.tif",
                                  "spacenet_ms1_4band_float64.tif", "spacenet_pan1_uint16.tif"])
def test_real_geotiffs_decode(name: str) -> None:
    image = decode_image((DATA / "geotiff" / name).read_bytes(), 16_000_000)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.std() > 1


def test_to_rgb8_constant_band_does_not_divide_by_zero() -> None:
    assert to_rgb8(np.full((4, 4), 7.0)).shape == (4, 4, 3)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (33, 47), (300, 256), (700, 650)])
def test_png_encoder_is_lossless_for_pillow_and_libpng(shape: tuple[int, int]) -> None:
    """(700, 650): 1.4 MB of rows, deflated in strips on every core of the machine (two or more)."""
    # Noise makes the "Up" filter wrap around 0 and 255 everywhere; a non-contiguous view must work too.
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 6), np.uint8)[:, :, ::2]
    data = encode_as(image, "png")
    assert np.array_equal(decode_image(data, 10**6), image)  # Pillow checks every chunk's CRC
    with MemoryFile(data) as memory, memory.open() as png:  # GDAL's PNG driver reads through libpng
        assert png.driver == "PNG" and np.array_equal(np.moveaxis(png.read(), 0, -1), image)


@pytest.mark.parametrize("shape", [(1, 1), (33, 47)])
def test_a_grey_image_is_a_grey_png(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, np.uint8)
    data = encode_as(image, "png")
    with Image.open(io.BytesIO(data)) as png:
        assert png.mode == "L" and np.array_equal(np.asarray(png), image)
    with MemoryFile(data) as memory, memory.open() as png:
        assert png.count == 1 and np.array_equal(png.read(1), image)


@pytest.mark.parametrize("strips", [2, 3, 7])
def test_deflate_in_strips_is_one_valid_zlib_stream(strips: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """However many cores: the strips join into one stream that zlib inflates (checking the Adler-32) to the
    input, about as small as one strip's."""
    monkeypatch.setattr(imaging, "_deflate_workers", lambda: strips)
    data = np.random.default_rng(strips).integers(0, 4, strips * imaging.DEFLATE_STRIP_BYTES + 17, np.uint8)
    stream = imaging.deflate(data)
    assert zlib.decompress(stream) == data.tobytes()
    assert len(stream) < 1.01 * len(zlib.compress(data.tobytes(), 1))


@pytest.mark.parametrize(("cpu_max", "expected"), [("50000 100000", 1), ("max 100000", None), ("", None)])
def test_deflate_strips_stay_within_the_cpu_quota(cpu_max: str, expected: int | None, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a core of quota (a Kubernetes limit of 500m): one strip; no quota or no cgroup file: every core."""
    quota = tmp_path / "cpu.max"
    if cpu_max:
        quota.write_text(cpu_max + "\n")
    monkeypatch.setattr(imaging, "CGROUP_CPU_MAX", str(quota))
    cores = len(os.sched_getaffinity(0))
    assert imaging._deflate_workers.__wrapped__() == (expected or cores)


def test_lossless_webp_and_high_quality_jpeg() -> None:
    image = rgb_image(64, 96)
    assert np.array_equal(decode_image(encode_as(image, "webp"), 10**6), image)
    assert y_psnr(decode_image(encode_as(image, "jpeg"), 10**6), image, 0) > 38


@pytest.mark.parametrize(("accept", "input_is_tiff", "expected"), [
    (None, False, "png"), (None, True, "tiff"), ("*/*", True, "tiff"), ("image/webp", False, "webp"),
    ("image/png;q=0.5, image/jpeg", False, "jpeg"), ("image/png;q=0, image/jpeg;q=0.8", False, "jpeg"),
    ("text/html, image/*", False, "png"), ("text/html", True, "tiff"), ("image/tiff;q=bad, image/png;q=0.1", True, "png"),
])
def test_output_format_follows_accept_by_quality(accept: str | None, input_is_tiff: bool, expected: str) -> None:
    assert output_format(None, accept, input_is_tiff) == expected
    assert output_format("webp", accept, input_is_tiff) == "webp"  # the form field wins


def test_accept_ruling_out_every_format_is_406() -> None:
    with pytest.raises(ServiceError) as refused:
        output_format(None, "image/png;q=0, image/gif", False)
    assert refused.value.status == 406 and refused.value.code == "not_acceptable"
