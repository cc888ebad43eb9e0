"""OpenAI Responses translated to chat completions, for a backend without ``/v1/responses``
(an older llama-server, a remote box): the request, the answer and its stream."""

from __future__ import annotations

import secrets
import time
from typing import Any

from hal0.dialects.sse import sse

__all__ = ["ChatStream", "chat_request", "response_from_chat"]


def _text(content: Any) -> Any:
    """Responses content parts as chat content (a string stays a string)."""
    if not isinstance(content, list):
        return content
    parts: list[dict[str, Any]] = []
    for p in content:
        if not isinstance(p, dict):
            continue
        if p.get("type") in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": p.get("text", "")})
        elif p.get("type") == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": p.get("image_url") or p.get("file_id", "")}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(body: dict[str, Any], items: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        out.append({"role": "system", "content": body["instructions"]})
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item.get("role") == "developer" else item.get("role", "user")
            out.append({"role": role, "content": _text(item.get("content", ""))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
            if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": str(item.get("output", ""))})
    return out


def chat_request(body: dict[str, Any], items: list[Any]) -> dict[str, Any]:
    """The chat completions request for a Responses request whose input is ``items``."""
    chat: dict[str, Any] = {"messages": _messages(body, items)}
    for key in ("model", "temperature", "top_p", "stream", "parallel_tool_calls", "seed"):
        if key in body:
            chat[key] = body[key]
    if "max_output_tokens" in body:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("stream"):
        chat["stream_options"] = {"include_usage": True}
    tools = [{"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters") if k in t}}
             for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _usage(u: dict[str, Any] | None) -> dict[str, Any] | None:
    if not u:
        return None
    return {"input_tokens": u.get("prompt_tokens", 0), "output_tokens": u.get("completion_tokens", 0),
            "total_tokens": u.get("total_tokens", 0)}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _message_item(text: str, mid: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": mid, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _call_item(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"type": "function_call", "id": _new_id("fc"), "call_id": call.get("id") or _new_id("call"),
            "name": fn.get("name", ""), "arguments": fn.get("arguments", ""), "status": "completed"}


def _response(rid: str, model: Any, output: list[Any], usage: dict[str, Any] | None, status: str,
              created: int) -> dict[str, Any]:
    return {"id": rid, "object": "response", "created_at": created, "status": status, "model": model,
            "output": output, "usage": usage, "error": None, "incomplete_details": None}


def response_from_chat(chat: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as a Responses object."""
    choice = (chat.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output: list[Any] = []
    if msg.get("content"):
        output.append(_message_item(msg["content"], _new_id("msg")))
    output += [_call_item(c) for c in msg.get("tool_calls") or []]
    status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
    return _response(_new_id("resp"), chat.get("model"), output, _usage(chat.get("usage")), status,
                     int(chat.get("created") or time.time()))


class ChatStream:
    """Chat completion chunks in, Responses stream events out (``feed`` each chunk, then ``finish``)."""

    def __init__(self) -> None:
        self.id, self._mid, self._created = _new_id("resp"), _new_id("msg"), int(time.time())
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._model: Any = None
        self._usage: dict[str, Any] | None = None
        self._finish: str | None = None
        self._seq = 0
        self.response: dict[str, Any] | None = None  # set by finish()

    def _ev(self, kind: str, **data: Any) -> bytes:
        self._seq += 1
        return sse({"type": kind, "sequence_number": self._seq, **data}, kind)

    def start(self) -> list[bytes]:
        head = _response(self.id, None, [], None, "in_progress", self._created)
        return [self._ev("response.created", response=head), self._ev("response.in_progress", response=head)]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        self._model = chunk.get("model", self._model)
        if chunk.get("usage"):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if not self._text:
                    out.append(self._ev("response.output_item.added", output_index=0,
                                        item=_message_item("", self._mid, "in_progress")))
                    out.append(self._ev("response.content_part.added", item_id=self._mid, output_index=0,
                                        content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
                self._text.append(delta["content"])
                out.append(self._ev("response.output_text.delta", item_id=self._mid, output_index=0,
                                    content_index=0, delta=delta["content"]))
            for call in delta.get("tool_calls") or []:
                blank = {"id": None, "function": {"name": "", "arguments": ""}}
                acc = self._calls.setdefault(call.get("index", 0), blank)
                acc["id"] = call.get("id") or acc["id"]
                fn = call.get("function") or {}
                acc["function"]["name"] += fn.get("name") or ""
                acc["function"]["arguments"] += fn.get("arguments") or ""
            self._finish = choice.get("finish_reason") or self._finish
        return out

    def finish(self) -> list[bytes]:
        out: list[bytes] = []
        output: list[Any] = []
        if self._text:
            text = "".join(self._text)
            item = _message_item(text, self._mid)
            out.append(self._ev("response.output_text.done", item_id=self._mid, output_index=0, content_index=0,
                                text=text))
            out.append(self._ev("response.content_part.done", item_id=self._mid, output_index=0, content_index=0,
                                part=item["content"][0]))
            out.append(self._ev("response.output_item.done", output_index=0, item=item))
            output.append(item)
        for _, call in sorted(self._calls.items()):
            item = _call_item(call)
            out.append(self._ev("response.output_item.added", output_index=len(output), item=item))
            out.append(self._ev("response.output_item.done", output_index=len(output), item=item))
            output.append(item)
        status = "incomplete" if self._finish == "length" else "completed"
        self.response = _response(self.id, self._model, output, self._usage, status, self._created)
        out.append(self._ev(f"response.{status}", response=self.response))
        return out
