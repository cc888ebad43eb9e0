"""Reading the fields of a multipart/form-data body hal0 forwards unchanged, and writing one."""

from __future__ import annotations

import re
import secrets

from hal0.errors import RequestInvalid

__all__ = ["encode_form", "form_fields"]

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


def encode_form(fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type: ``fields`` as text parts, ``files`` as
    ``name: (filename, content type, data)``. Names and file names must not contain quotes."""
    boundary = "hal0-" + secrets.token_hex(16)  # random: no part can contain it by accident
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, (filename, ctype, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
