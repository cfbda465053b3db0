"""Multipart parsing without BentoML's URL fetching.

BentoML treats a text value in a file field as a URL and downloads it (an SSRF door), and answers a
malformed multipart body with 500. :func:`install` swaps in a parser that rejects both with 422.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from _bentoml_impl.serde import ALL_SERDE, MultipartSerde
from bentoml.exceptions import BentoMLException
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException


def unprocessable(detail: str) -> BentoMLException:
    return BentoMLException(detail, error_code=HTTPStatus.UNPROCESSABLE_ENTITY)


class NoFetchMultipartSerde(MultipartSerde):
    @staticmethod
    async def ensure_file(obj: str | UploadFile) -> UploadFile:
        if isinstance(obj, UploadFile):
            return obj
        raise unprocessable("image must be sent as a file part; text values (URLs included) are not accepted")

    async def parse_request(self, request: Any, cls: Any) -> Any:
        try:
            return await super().parse_request(request, cls)
        except MultiPartException as exc:
            raise unprocessable(f"malformed multipart body: {exc}") from None


def install() -> None:
    for media_type, serde in list(ALL_SERDE.items()):
        if serde is MultipartSerde:
            ALL_SERDE[media_type] = NoFetchMultipartSerde  # type: ignore[index]
