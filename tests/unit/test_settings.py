from __future__ import annotations

import ipaddress

import pytest

from hndsr_service.settings import Settings, SettingsError, load_settings


def test_defaults_follow_the_spec() -> None:
    s = load_settings({})
    assert (s.max_queue_depth, s.rate_limit_per_hour, s.max_payload_mb) == (20, 100, 20.0)
    assert (s.max_image_pixels, s.max_concurrent, s.request_timeout_s) == (16_000_000, 4, 30.0)
    assert (s.host, s.port, s.device) == ("127.0.0.1", 8000, "auto")
    assert s == Settings()


def test_environment_overrides() -> None:
    s = load_settings({"PORT": "9000", "HOST": "0.0.0.0", "DEVICE": "CPU", "TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
                       "CORS_ORIGINS": "https://a.example,https://b.example", "MAX_PAYLOAD_MB": "0.5"})
    assert s.port == 9000 and s.host == "0.0.0.0" and s.device == "cpu"
    assert ipaddress.ip_address("10.1.2.3") in s.trusted_proxies[0]
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.max_payload_bytes == 512 * 1024


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "0"), ("PORT", "http"), ("DEVICE", "tpu"), ("MAX_QUEUE_DEPTH", "-1"), ("RATE_LIMIT_PER_HOUR", "1.5"),
    ("MAX_PAYLOAD_MB", "zero"), ("REQUEST_TIMEOUT_S", "0"), ("TRUSTED_PROXIES", "not-an-ip"), ("HOST", "example.com"),
    ("TILE_OVERLAP", "200"), ("API_KEYS", "short"), ("TILE_BATCH", "0"), ("BATCH_WAIT_MS", "-1"),
    ("BATCH_WAIT_MS", "500"),
])
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})
