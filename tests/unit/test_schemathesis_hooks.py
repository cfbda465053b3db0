"""The contract run's hook reads a sent multipart form as the server does (tests/integration/schemathesis_hooks.py)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx

from tests.integration.schemathesis_hooks import fields_schema, sent_form

FORM = {"type": "object", "additionalProperties": False, "required": ["image"], "properties": {
    "image": {"type": "string", "format": "binary"},
    "seed": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
    "bands": {"anyOf": [{"type": "string", "pattern": "^[1-9][0-9]*$"}, {"type": "null"}]}}}


def sent(data: dict, files: dict) -> SimpleNamespace:
    request = httpx.Request("POST", "http://x/jobs", data=data, files=files)
    return SimpleNamespace(request=SimpleNamespace(body=request.read(), headers=request.headers))


def test_fields_are_read_as_the_server_reads_them() -> None:
    fields, has_file = sent_form(sent({"seed": "null", "bands": "4", "other": "4,3"}, {"image": ("a.png", b"x")}))
    assert fields == {"seed": None, "bands": 4, "other": "4,3"} and has_file
    fields, has_file = sent_form(sent({"image": "text, not a file"}, {"other": ("a.png", b"x")}))
    assert fields == {"image": "text, not a file"} and not has_file


def test_the_schema_judges_the_fields_without_the_file() -> None:
    schema = fields_schema(FORM)
    assert "image" not in schema["properties"] and schema["required"] == []
