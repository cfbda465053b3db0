"""schemathesis hooks for this service's runs (``schemathesis.toml`` loads them).

schemathesis keeps a "negative" case only if the body it generated breaks the schema, but it cannot tell
for a body that holds a file (its validator does not read binary values). So multipart requests reach the
server that are valid as sent: a field mutated into ``[]`` goes on the wire as no part at all, a nullable
field mutated from one branch of its ``anyOf`` into ``null`` is still allowed by the other. The server
rightly accepts them and the check reports "schema-violating request accepted". :func:`filter_failure`
does the reading schemathesis skips: it drops that failure only when the form as sent, read field by field
as the server reads it (``schemas.form_value``), satisfies the documented schema and carries its file.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import jsonschema
import schemathesis
from schemathesis import Case, Response
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.hooks import HookContext

from hndsr_service.schemas import form_value

FILE_FIELD = "image"


def sent_form(response: Response) -> tuple[dict[str, Any], bool]:
    """The text fields of the multipart request as the server reads them (the last of repeated ones, as
    Starlette's form does), and whether the file field was sent as a file."""
    body = response.request.body or b""
    head = f"Content-Type: {response.request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    fields: dict[str, Any] = {}
    has_file = False
    for part in BytesParser(policy=HTTP).parsebytes(head + (body.encode() if isinstance(body, str) else body)
                                                    ).iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            has_file = has_file or name == FILE_FIELD
        else:
            fields[name] = form_value(part.get_payload(decode=True).decode(errors="replace"))
    return fields, has_file


def fields_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The body's schema without its file field (what a JSON Schema validator can judge)."""
    properties = {name: value for name, value in schema["properties"].items() if name != FILE_FIELD}
    return {**schema, "properties": properties, "required": [n for n in schema.get("required", ()) if n in properties]}


@schemathesis.hook
def filter_failure(context: HookContext, failure: Failure, case: Case, response: Response) -> bool:
    if not isinstance(failure, AcceptedNegativeData) or case.media_type != "multipart/form-data":
        return True
    fields, has_file = sent_form(response)
    schema = case.operation.definition.raw["requestBody"]["content"][case.media_type]["schema"]
    return not (has_file and jsonschema.Draft202012Validator(fields_schema(schema)).is_valid(fields))
