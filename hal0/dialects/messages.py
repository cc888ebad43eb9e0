"""Checks on chat messages that every dialect forwarding them to llama-server shares."""

from __future__ import annotations

from typing import Any

from hal0.errors import RequestInvalid

__all__ = ["check_message_fields"]

_STRINGS = ("name", "tool_call_id")  # llama-server parses these as strings: any other type is its 500


def check_message_fields(messages: list[Any]) -> None:
    """Fields llama-server reads strictly, checked here so a wrong type is hal0's 400 naming the field
    (the backend answers 500 "type must be string"). Messages that are not objects are the caller's
    to refuse."""
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        for key in _STRINGS:
            if key in m and not isinstance(m[key], str):
                raise RequestInvalid(f"messages[{i}].{key} must be a string", param=f"messages.{i}.{key}")
        if "content" in m and not (m["content"] is None or isinstance(m["content"], (str, list))):
            raise RequestInvalid(f"messages[{i}].content must be a string, a list of parts or null",
                                 param=f"messages.{i}.content")
