"""Multipart parsing without BentoML's URL fetching.

BentoML treats a text value in a file field as a URL and downloads it (an SSRF door), answers a
malformed multipart body (a broken part, or no boundary at all) with 500, and takes one of the values of a
field sent twice. :func:`install` swaps in a parser that rejects all three with 422, and that labels a generic ``application/octet-stream`` part by its magic bytes (curl sends a ``.tif``
that way) so the declared ``image/*`` content type can be checked.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from _bentoml_impl.serde import ALL_SERDE, MultipartSerde
from bentoml.exceptions import BentoMLException
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from hndsr_model.data import sniff_media_type

from .errors import coded_detail


def unprocessable(detail: str, code: str = "invalid_request") -> BentoMLException:
    """A 422 from inside BentoML's parsing; ``errors.foreign_error`` gives it ``code`` back in the envelope."""
    return BentoMLException(coded_detail(code, detail), error_code=HTTPStatus.UNPROCESSABLE_ENTITY)


class NoFetchMultipartSerde(MultipartSerde):
    @staticmethod
    async def ensure_file(obj: str | UploadFile) -> UploadFile:
        if isinstance(obj, UploadFile):
            return label_by_content(obj)
        raise unprocessable("image must be sent as a file part; text values (URLs included) are not accepted")

    async def parse_request(self, request: Any, cls: Any) -> Any:
        try:
            repeated = repeated_fields(await request.form())  # Starlette keeps the form for the parser below
            if repeated:
                raise unprocessable(repeated_message(repeated))
            return await super().parse_request(request, cls)
        except MultiPartException as exc:
            raise unprocessable(f"malformed multipart body: {exc.message}") from None
        except HTTPException as exc:  # Starlette's form parser turns its MultiPartException into a 400 in an app
            raise unprocessable(f"malformed multipart body: {exc.detail}") from None


def repeated_fields(form: FormData) -> list[str]:
    """The fields a form gives more than once: no route takes a list, and which value a parser keeps is an
    accident of its code (schemathesis found a doubled field accepted)."""
    names = [name for name, _ in form.multi_items()]
    return sorted({name for name in names if names.count(name) > 1})


def repeated_message(repeated: list[str]) -> str:
    return f"malformed form: field{'s' if len(repeated) > 1 else ''} {', '.join(repeated)} given more than once"


def label_by_content(upload: UploadFile) -> UploadFile:
    head = upload.file.read(16)
    upload.file.seek(0)
    if not head:  # whatever its declared type: the decoders' own words for it
        raise unprocessable("image is empty", code="invalid_image")
    if upload.content_type not in (None, "", "application/octet-stream"):
        return upload
    media_type = sniff_media_type(head)
    if media_type is None:
        return upload
    return UploadFile(upload.file, size=upload.size, filename=upload.filename,
                      headers=Headers({**upload.headers, "content-type": media_type}))


def install() -> None:
    for media_type, serde in list(ALL_SERDE.items()):
        if serde is MultipartSerde:
            ALL_SERDE[media_type] = NoFetchMultipartSerde  # type: ignore[index]
