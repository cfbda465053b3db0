"""The web page's routes without a browser: the page, its files, its config and its policy."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.testclient import TestClient

from hndsr_model.weights import DEFAULT_VARIANT, VARIANT_FILES
from hndsr_service.settings import ApiKey, Settings
from hndsr_service.ui import STATIC, ui_routes

CONTRACT_IDS = ("file", "scale", "steps", "seed", "run", "status", "before", "after", "split", "download", "error")


def client(**settings: object) -> TestClient:
    return TestClient(Starlette(routes=ui_routes(Settings(**settings))))


def test_page_has_the_contract_ids_and_a_strict_policy() -> None:
    for path in ("/ui", "/ui/"):
        response = client().get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        for element in CONTRACT_IDS:
            assert len(re.findall(f'id="{element}"', response.text)) == 1, element
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy


def test_scale_and_steps_defaults() -> None:
    page = client().get("/ui").text
    assert re.findall(r'<option value="(\d)"', page) == [str(s) for s in range(2, 9)]
    assert '<option value="4" selected>' in page and re.search(r'id="steps"[^>]*value="0"', page)


def test_model_choices_are_the_shipped_variants() -> None:
    page = client().get("/ui").text
    select = re.search(r'<select id="model"[^>]*>(.*?)</select>', page, re.DOTALL).group(1)
    assert re.findall(r'<option value="(\w+)"', select) == list(VARIANT_FILES)
    assert f'<option value="{DEFAULT_VARIANT}" selected>' in select


def test_static_files_and_no_outside_urls() -> None:
    c = client()
    for name in ("app.js", "map.js", "style.css", "vendor/geotiff.js", "vendor/geotiff.LICENSE", "vendor/ol.js",
                 "vendor/ol.css", "vendor/ol.LICENSE", "vendor/proj4.js", "vendor/proj4.LICENSE"):
        assert c.get(f"/ui/{name}").status_code == 200, name
    assert c.get("/ui/../probes.py").status_code == 404
    for name in ("index.html", "app.js", "map.js", "style.css"):
        assert not re.search(r"(src|href)=\"(https?:)?//|url\((https?:)?//|fetch\(\"http", (STATIC / name).read_text())


def test_config_tells_the_page_the_limits() -> None:
    body = client(max_image_pixels=1000, max_payload_mb=0.5, api_keys=(ApiKey("k" * 16),)).get("/ui/config.json").json()
    assert body == {"max_image_pixels": 1000, "max_output_pixels": Settings().max_output_pixels,
                    "max_payload_bytes": 524288, "max_job_upload_bytes": Settings().max_job_upload_bytes,
                    "api_key_required": True, "basemap_url": None}
    assert client().get("/ui/config.json").json()["api_key_required"] is False


def test_crs_definitions_for_the_map_come_from_proj() -> None:
    c = client()
    lambert = c.get("/ui/crs/EPSG:2154")
    assert lambert.status_code == 200 and lambert.headers["cache-control"] == "public, max-age=86400"
    assert lambert.text.startswith("+proj=lcc ") and "+lat_0=46.5" in lambert.text and lambert.text.endswith("+no_defs")
    assert c.get("/ui/crs/EPSG:32631").text == "+proj=utm +zone=31 +datum=WGS84 +units=m +no_defs"
    for unknown in ("EPSG:99999999", "EPSG:abc", "ESRI:102022", "32631"):
        response = c.get(f"/ui/crs/{unknown}")
        assert response.status_code == 404 and response.json()["error"] == "unknown_crs", unknown


def test_a_basemap_is_offered_and_allowed_only_when_set() -> None:
    assert "tile.example" not in client().get("/ui").headers["content-security-policy"]
    c = client(ui_basemap_url="https://tile.example.org/{z}/{x}/{y}.png")
    assert c.get("/ui/config.json").json()["basemap_url"] == "https://tile.example.org/{z}/{x}/{y}.png"
    policy = c.get("/ui").headers["content-security-policy"]
    assert "img-src 'self' blob: data: https://tile.example.org;" in policy
    assert "connect-src 'self' https://tile.example.org;" in policy
