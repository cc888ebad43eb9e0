"""Reading the fields of a multipart/form-data body hal0 forwards unchanged."""

from __future__ import annotations

import re

from hal0.errors import RequestInvalid

__all__ = ["form_fields"]

_NAME = re.compile(rb'name="([^"]*)"')
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


def form_fields(raw: bytes, content_type: str) -> dict[str, bytes]:
    """Every part of ``raw`` by field name (the last one wins). Raises RequestInvalid."""
    if not content_type.startswith("multipart/form-data"):
        raise RequestInvalid("send the audio as multipart/form-data with a `file` field", param="file")
    m = _BOUNDARY.search(content_type)
    if not m:
        raise RequestInvalid("multipart/form-data without a boundary", param="file")
    fields: dict[str, bytes] = {}
    for part in raw.split(b"--" + m.group(1).encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, body = part.partition(b"\r\n\r\n")
        name = _NAME.search(head)
        if sep and name:
            fields[name.group(1).decode(errors="replace")] = body.removesuffix(b"\r\n")
    return fields
