"""Which requests a guard looks at, read from the ASGI scope."""

from __future__ import annotations

from starlette.types import Scope

INFERENCE_PATHS = frozenset({"/infer", "/upscale"})
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_inference(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INFERENCE_PATHS


def may_have_body(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["method"] not in BODYLESS_METHODS
