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
                       "CORS_ORIGINS": "https://a.example,https://b.example", "MAX_PAYLOAD_MB": "0.5",
                       "ADMIT_BY_SPEED": "False", "INFERENCE_ENGINE": "ONNXRuntime",
                       "UI_BASEMAP_URL": "https://tiles.example/{z}/{x}/{y}.png"})
    assert s.inference_engine == "onnxruntime" and s.ui_basemap_url == "https://tiles.example/{z}/{x}/{y}.png"
    assert s.port == 9000 and s.host == "0.0.0.0" and s.device == "cpu"
    assert ipaddress.ip_address("10.1.2.3") in s.trusted_proxies[0]
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.max_payload_bytes == 512 * 1024 and s.admit_by_speed is False


@pytest.mark.parametrize(("name", "value"), [
    ("PORT", "0"), ("PORT", "http"), ("DEVICE", "tpu"), ("MAX_QUEUE_DEPTH", "-1"), ("RATE_LIMIT_PER_HOUR", "1.5"),
    ("MAX_PAYLOAD_MB", "zero"), ("REQUEST_TIMEOUT_S", "0"), ("TRUSTED_PROXIES", "not-an-ip"), ("HOST", "example.com"),
    ("TILE_OVERLAP", "200"), ("API_KEYS", "short"), ("TILE_BATCH", "0"), ("BATCH_WAIT_MS", "-1"),
    ("BATCH_WAIT_MS", "500"), ("ADMIT_BY_SPEED", "maybe"), ("INFERENCE_ENGINE", "openvino"),
    ("UI_BASEMAP_URL", "https://tiles.example/tile.png"), ("UI_BASEMAP_URL", "file:///{z}/{x}/{y}.png"),
    ("UI_BASEMAP_URL", "https://{a-c}.tiles.example/{z}/{x}/{y}.png"),
    ("UI_BASEMAP_URL", "https://user:secret@tiles.example/{z}/{x}/{y}.png"),
])
def test_bad_values_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_api_keys_as_a_list_or_a_file_with_own_limits(tmp_path) -> None:
    listed = load_settings({"API_KEYS": f"{'a' * 16}, {'b' * 20}=500"}).api_keys
    assert [(k.secret, k.rate_limit_per_hour) for k in listed] == [("a" * 16, None), ("b" * 20, 500)]
    keys = tmp_path / "keys"
    keys.write_text(f"# team A\n{'a' * 16}\n\n{'b' * 20}=500\n")
    assert load_settings({"API_KEYS_FILE": str(keys)}).api_keys == listed
    assert len({k.fingerprint for k in listed}) == 2 and "a" * 16 not in repr(load_settings({"API_KEYS_FILE": str(keys)}))


@pytest.mark.parametrize("entry", ["short-key", f"{'s' * 16}=0", f"{'s' * 16}=many", f"{'s' * 8} {'t' * 8}"])
def test_a_bad_key_is_named_by_its_place_never_quoted(entry: str) -> None:
    with pytest.raises(SettingsError, match="API_KEYS entry 2") as raised:
        load_settings({"API_KEYS": f"{'a' * 16},{entry}"})
    assert entry not in str(raised.value) and "a" * 16 not in str(raised.value)


def test_api_keys_in_one_place_only(tmp_path) -> None:
    with pytest.raises(SettingsError, match="both set"):
        load_settings({"API_KEYS": "a" * 16, "API_KEYS_FILE": str(tmp_path / "keys")})
    with pytest.raises(SettingsError, match="API_KEYS_FILE"):
        load_settings({"API_KEYS_FILE": str(tmp_path / "absent")})
    with pytest.raises(SettingsError, match="twice"):
        load_settings({"API_KEYS": f"{'a' * 16},{'a' * 16}=5"})


def test_body_idle_timeout() -> None:
    assert load_settings({}).body_idle_timeout_s == 10.0
    assert load_settings({"BODY_IDLE_TIMEOUT_S": "2.5"}).body_idle_timeout_s == 2.5
    with pytest.raises(SettingsError, match="BODY_IDLE_TIMEOUT_S"):
        load_settings({"BODY_IDLE_TIMEOUT_S": "0"})


def test_fleet_settings_and_a_database_url_never_shown() -> None:
    url = "postgresql://hndsr:s3cret-pass@db:5432/hndsr"
    settings = load_settings({"JOBS_DATABASE_URL": url, "JOBS_STORAGE_URL": "s3://bucket/prefix", "JOB_LEASE_S": "12",
                              "REPLICA_ID": "pod-7"})
    assert (settings.jobs_database_url, settings.jobs_storage_url) == (url, "s3://bucket/prefix")
    assert (settings.job_lease_s, settings.replica_id) == (12.0, "pod-7")
    assert "s3cret" not in repr(settings)
    with pytest.raises(SettingsError) as caught:
        load_settings({"JOBS_DATABASE_URL": "mysql://hndsr:s3cret-pass@db/hndsr"})
    assert "s3cret" not in str(caught.value) and "JOBS_DATABASE_URL is invalid" in str(caught.value)
    for name, value in (("JOBS_STORAGE_URL", "s3:///prefix"), ("JOBS_STORAGE_URL", "/data"), ("JOB_LEASE_S", "1")):
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})
    assert ":" in load_settings({}).replica_id  # hostname:pid
