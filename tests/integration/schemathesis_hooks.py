"""schemathesis hooks for this service's runs (``schemathesis.toml`` loads them).

A multipart form cannot carry an empty array or object: such a field is sent as no part at all. A
"negative" case that mutates a form field into ``[]`` or ``{}`` therefore goes on the wire as a valid
request, and schemathesis 4.32 cannot tell (its re-reading of the sent form stumbles on the binary
``image`` part), so it reports the server's 2xx as accepting invalid data. Such cases are not sent.
"""

from __future__ import annotations

import schemathesis
from schemathesis import Case
from schemathesis.hooks import HookContext


@schemathesis.hook
def filter_case(context: HookContext, case: Case) -> bool:
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if not negative or case.media_type != "multipart/form-data" or not isinstance(case.body, dict):
        return True
    return all(value not in ([], {}) for value in case.body.values())
