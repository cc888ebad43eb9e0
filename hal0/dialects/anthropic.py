"""Anthropic Messages (``/v1/messages``, ``/v1/messages/count_tokens``): checked here, forwarded
to llama-server, which implements both; every error comes back in Anthropic's shape so its SDKs
raise the right exception class."""

from __future__ import annotations

from typing import Any

from hal0.dialects.messages import check_message_fields
from hal0.dispatch.proxy import Dialect
from hal0.errors import RequestInvalid, anthropic_envelope, anthropic_error_type

__all__ = ["ANTHROPIC", "check_messages", "from_backend"]


def from_backend(status: int, body: Any) -> Any:
    """A backend's JSON error (llama-server answers in OpenAI's shape) in Anthropic's."""
    if isinstance(body, dict) and body.get("type") == "error":
        return body
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    return {"type": "error", "error": {"type": anthropic_error_type(status),
                                       "message": str(message if message is not None else body)}}


ANTHROPIC = Dialect(error=anthropic_envelope, backend_error=from_backend, sse_event="error")


def check_messages(body: dict[str, Any], *, count: bool = False) -> None:
    """What llama-server would answer with a 500 (or accept wrongly): a 400 here, in hal0's words."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestInvalid("`messages` is required: a non-empty list of {role, content}", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant") or "content" not in m:
            raise RequestInvalid(f"messages[{i}] must be an object with `role` user or assistant and `content`",
                                 param=f"messages.{i}")
    check_message_fields(messages)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestInvalid("`model` must be a string", param="model")
    if count:
        return
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise RequestInvalid("`max_tokens` must be a positive integer", param="max_tokens")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise RequestInvalid("`stream` must be true or false", param="stream")
