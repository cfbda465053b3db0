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
    for name in ("app.js", "style.css", "vendor/geotiff.js", "vendor/geotiff.LICENSE"):
        assert c.get(f"/ui/{name}").status_code == 200, name
    assert c.get("/ui/../probes.py").status_code == 404
    for name in ("index.html", "app.js", "style.css"):
        assert not re.search(r"(src|href)=\"(https?:)?//|url\((https?:)?//|fetch\(\"http", (STATIC / name).read_text())


def test_config_tells_the_page_the_limits() -> None:
    body = client(max_image_pixels=1000, max_payload_mb=0.5, api_keys=(ApiKey("k" * 16),)).get("/ui/config.json").json()
    assert body == {"max_image_pixels": 1000, "max_output_pixels": Settings().max_output_pixels,
                    "max_payload_bytes": 524288, "api_key_required": True}
    assert client().get("/ui/config.json").json()["api_key_required"] is False
