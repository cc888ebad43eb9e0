"""Ollama's ``/api/*`` dialect <-> the OpenAI requests hal0 dispatches: pure functions, no I/O.

A request is translated into an OpenAI chat/completions/embeddings body (which then goes through
the same resolution, admission and slot lifecycle as ``/v1``); the backend's answer (JSON or an
SSE stream) is translated back. What Ollama has and llama-server cannot do is refused or ignored
as docs/api.md says (``num_ctx`` cannot resize a running backend's context, for one).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hal0.errors import RequestInvalid

__all__ = [
    "NEVER",
    "OPTION_MAP",
    "ChatStream",
    "SSEDecoder",
    "Timing",
    "chat_request",
    "chat_response",
    "done_reason",
    "embed_request",
    "embed_response",
    "generate_request",
    "generate_response",
    "model_name",
    "ndjson",
    "parse_keep_alive",
    "pull_ref",
    "rfc3339",
    "stats",
]

# Ollama option -> llama-server request field (same meaning, same unit).
OPTION_MAP = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed", "stop": "stop",
    "min_p": "min_p", "typical_p": "typical_p", "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty", "mirostat": "mirostat", "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta", "num_keep": "n_keep",
}
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop",
           "content_filter": "stop"}


def model_name(name: Any, param: str = "model") -> str:
    """An Ollama model name as hal0 resolves it: ``name:latest`` is ``name``."""
    if not isinstance(name, str) or not name:
        raise RequestInvalid(f"`{param}` is required: a hal0 model id or slot name", param=param)
    return name.removesuffix(":latest")


_KEEP_ALIVE_MAX_S = 365 * 86400.0
NEVER = 32503680000.0  # 3000-01-01: Ollama's "expires_at" of a model that never unloads, and the latest written


def parse_keep_alive(value: Any) -> float | None:
    """Ollama's ``keep_alive`` in seconds: a number of seconds or a Go duration ("5m", "1h30m", "0");
    negative, or longer than a year (or not a finite number of seconds), means forever (-1.0): a
    timer that far out would overflow the event loop's clock; None when absent. Raises RequestInvalid."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise RequestInvalid("`keep_alive` must be a duration such as \"5m\" or a number of seconds",
                             param="keep_alive")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)  # "300", "-1"
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise RequestInvalid(f"`keep_alive` {value!r} is not a duration such as \"5m\", \"1h30m\" or \"0\"",
                                     param="keep_alive") from None
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        raise RequestInvalid("`keep_alive` must be a duration string or a number", param="keep_alive")
    return -1.0 if not 0 <= seconds <= _KEEP_ALIVE_MAX_S else seconds  # NaN fails the test too


def rfc3339(ts: float | None = None) -> str:
    """A wall time as Ollama writes it (UTC, ``Z``)."""
    moment = datetime.fromtimestamp(min(max(time.time() if ts is None else ts, 0.0), NEVER), UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def ndjson(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


# --- requests -------------------------------------------------------------------------------

def _options(body: dict[str, Any]) -> dict[str, Any]:
    """``options`` as llama-server sampling fields. ``num_predict`` -> ``max_tokens`` (negative: no
    limit); ``num_ctx`` and the load-time options (num_gpu, num_thread...) are not per-request
    settings on a running llama-server and are ignored."""
    opts = body.get("options")
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise RequestInvalid("`options` must be an object", param="options")
    out = {OPTION_MAP[k]: v for k, v in opts.items() if k in OPTION_MAP and v is not None}
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    predict = opts.get("num_predict")
    if predict is not None:
        if not isinstance(predict, int) or isinstance(predict, bool):
            raise RequestInvalid("`options.num_predict` must be an integer", param="options.num_predict")
        if predict >= 0:
            out["max_tokens"] = predict
    return out


def _format(fmt: Any) -> dict[str, Any] | None:
    """``format``: "json" -> any JSON object; a JSON schema -> that schema (llama-server turns both
    into a grammar)."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        schema: dict[str, Any] = {"type": "object"}
    elif isinstance(fmt, dict):
        schema = fmt
    else:
        raise RequestInvalid("`format` must be \"json\" or a JSON schema object", param="format")
    return {"type": "json_schema", "json_schema": {"name": "ollama_format", "schema": schema}}


def _think(think: Any) -> dict[str, Any]:
    """``think``: true/false switch the template's thinking; "low"/"medium"/"high" also set the effort."""
    if think is None:
        return {}
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    if think in ("low", "medium", "high"):
        return {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": think}
    raise RequestInvalid("`think` must be true, false, \"low\", \"medium\" or \"high\"", param="think")


def _image_parts(images: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise RequestInvalid(f"`{param}` must be a list of base64 strings", param=param)
    return [{"type": "image_url", "image_url": {"url": i if i.startswith("data:") else _data_url(i)}}
            for i in images]


def _data_url(b64: str) -> str:
    head = b64[:16]
    mime = ("image/png" if head.startswith("iVBOR") else "image/gif" if head.startswith("R0lGOD")
            else "image/webp" if head.startswith("UklGR") else "image/jpeg")
    return f"data:{mime};base64,{b64}"


def _content(text: str, images: Any, param: str) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts = _image_parts(images, param)
    return [{"type": "text", "text": text}, *parts] if text else parts


def _tool_calls(calls: Any, index: int, ids: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Ollama tool calls (``arguments`` an object) as OpenAI's (a JSON string, with an id)."""
    if not isinstance(calls, list):
        raise RequestInvalid(f"`messages[{index}].tool_calls` must be a list", param="messages")
    out = []
    for n, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise RequestInvalid(f"`messages[{index}].tool_calls[{n}].function.name` is required", param="messages")
        args = fn.get("arguments", {})
        cid = call.get("id") or f"call_{index}_{n}"
        ids.setdefault(fn["name"], []).append(cid)
        out.append({"id": cid, "type": "function", "function": {
            "name": fn["name"], "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return out


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise RequestInvalid("`messages` must be a list of messages", param="messages")
    out: list[dict[str, Any]] = []
    ids: dict[str, list[str]] = {}  # tool name -> ids of its calls not yet answered
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestInvalid(f"`messages[{i}]` must be an object with a `role`", param="messages")
        text = m.get("content") or ""
        if not isinstance(text, str):
            raise RequestInvalid(f"`messages[{i}].content` must be a string", param="messages")
        msg: dict[str, Any] = {"role": m["role"], "content": _content(text, m.get("images"), f"messages[{i}].images")}
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls(m["tool_calls"], i, ids)
        if m.get("thinking"):
            msg["reasoning_content"] = m["thinking"]
        if m["role"] == "tool":
            name = m.get("tool_name") or m.get("name")
            pending = ids.get(name, []) if isinstance(name, str) else []
            msg["tool_call_id"] = m.get("tool_call_id") or (pending.pop(0) if pending else f"call_{name or i}")
            if isinstance(name, str):
                msg["name"] = name
        out.append(msg)
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("function"), dict)
                                              for t in tools):
        raise RequestInvalid("`tools` must be a list of {\"type\": \"function\", \"function\": {...}}", param="tools")
    return [{**t, "type": t.get("type") or "function"} for t in tools]


def _common(body: dict[str, Any], model: str) -> dict[str, Any]:
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise RequestInvalid("`stream` must be true or false", param="stream")
    out: dict[str, Any] = {"model": model, "stream": stream, **_options(body)}
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """``/api/chat`` as a ``/v1/chat/completions`` body (Ollama streams unless ``stream: false``)."""
    out = _common(body, model_name(body.get("model")))
    out["messages"] = _messages(body.get("messages") or [])
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if (fmt := _format(body.get("format"))) is not None:
        out["response_format"] = fmt
    out.update(_think(body.get("think")))
    return out


def generate_request(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``/api/generate`` as ``(path, body)``: a chat completion of ``system`` + ``prompt`` (with its
    images); ``raw: true`` or a ``suffix`` -> a plain ``/v1/completions`` of the prompt as given."""
    model = model_name(body.get("model"))
    prompt, system = body.get("prompt") or "", body.get("system") or ""
    if not isinstance(prompt, str) or not isinstance(system, str):
        raise RequestInvalid("`prompt` and `system` must be strings", param="prompt")
    out = _common(body, model)
    if (fmt := _format(body.get("format"))) is not None:
        out["response_format"] = fmt
    suffix = body.get("suffix")
    if body.get("raw") or suffix:
        if body.get("images"):
            raise RequestInvalid("`images` need the chat template: drop `raw` and `suffix`", param="images")
        out["prompt"] = prompt
        if suffix:
            out["suffix"] = suffix
        return "/v1/completions", out
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _content(prompt, body.get("images"), "images")})
    out["messages"] = messages
    out.update(_think(body.get("think")))
    return "/v1/chat/completions", out


def embed_request(body: dict[str, Any], *, legacy: bool = False) -> dict[str, Any]:
    """``/api/embed`` (``input``: a string or a list) or ``/api/embeddings`` (``prompt``) as ``/v1/embeddings``."""
    model = model_name(body.get("model"))
    key = "prompt" if legacy else "input"
    value = body.get(key)
    ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
    if not ok:
        raise RequestInvalid(f"`{key}` must be a string" + ("" if legacy else " or a non-empty list of strings"),
                             param=key)
    out: dict[str, Any] = {"model": model, "input": value}
    dims = body.get("dimensions")
    if dims is not None:
        out["dimensions"] = dims
    return out


def pull_ref(name: str) -> str:
    """An Ollama pull name as a hal0 reference: ``hf.co/OWNER/REPO:QUANT`` (Ollama's Hugging Face
    form, Q4_K_M when no quantisation is named) -> ``hf://OWNER/REPO:QUANT``; anything else (a
    catalogue id, ``hf://...`` or a URL) as it is, without ``:latest``."""
    for host in ("hf.co/", "huggingface.co/", "https://hf.co/", "https://huggingface.co/"):
        if name.startswith(host):
            repo, _, quant = name[len(host):].partition(":")
            if quant in ("", "latest"):
                quant = "Q4_K_M"
            return f"hf://{repo}:{quant}"
    return model_name(name)


# --- answers --------------------------------------------------------------------------------

@dataclass
class Timing:
    """Wall clock of one request in hal0 (``time.monotonic_ns``): start, and when the slot admitted it."""

    start: int = field(default_factory=time.monotonic_ns)
    admitted: int | None = None


def stats(usage: dict[str, Any] | None, timings: dict[str, Any] | None, timing: Timing) -> dict[str, Any]:
    """Ollama's counts and durations (nanoseconds): counts from the backend's ``usage``, the
    evaluation durations from llama-server's ``timings``, load and total from hal0's own clock
    (load: the wait for admission, which covers a wake, a swap or a queue)."""
    now = time.monotonic_ns()
    out: dict[str, Any] = {"total_duration": now - timing.start,
                           "load_duration": (timing.admitted or timing.start) - timing.start}
    usage, timings = usage or {}, timings or {}
    prompt = usage.get("prompt_tokens", timings.get("prompt_n"))
    evals = usage.get("completion_tokens", timings.get("predicted_n"))
    if isinstance(prompt, int):
        out["prompt_eval_count"] = prompt
    if isinstance(evals, int):
        out["eval_count"] = evals
    for key, src in (("prompt_eval_duration", "prompt_ms"), ("eval_duration", "predicted_ms")):
        ms = timings.get(src)
        if isinstance(ms, int | float):
            out[key] = int(ms * 1_000_000)
    return out


def done_reason(finish: Any) -> str:
    return _FINISH.get(finish, "stop") if isinstance(finish, str) else "stop"


def _arguments(raw: Any) -> dict[str, Any] | None:
    """OpenAI's JSON-string arguments as Ollama's object; None when they are no JSON object (a call
    cut off by ``num_predict``)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return None
    return raw if isinstance(raw, dict) else None


def _ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls as Ollama's; a call whose arguments are not a whole JSON object is dropped."""
    out: list[dict[str, Any]] = []
    for c in calls:
        fn = c.get("function") or {}
        args = _arguments(fn.get("arguments"))
        if args is not None:
            out.append({"id": c.get("id") or f"call_{len(out)}",
                        "function": {"index": len(out), "name": fn.get("name", ""), "arguments": args}})
    return out


def _message(msg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
    if msg.get("reasoning_content"):
        out["thinking"] = msg["reasoning_content"]
    if calls := _ollama_calls(msg.get("tool_calls") or []):
        out["tool_calls"] = calls
    return out


def chat_response(answer: dict[str, Any], model: str, timing: Timing) -> dict[str, Any]:
    """A ``chat.completion`` as Ollama's final chat answer."""
    choice = (answer.get("choices") or [{}])[0]
    return {"model": model, "created_at": rfc3339(), "message": _message(choice.get("message") or {}),
            "done": True, "done_reason": done_reason(choice.get("finish_reason")),
            **stats(answer.get("usage"), answer.get("timings"), timing)}


def generate_response(answer: dict[str, Any], model: str, timing: Timing) -> dict[str, Any]:
    """A ``chat.completion`` or ``text_completion`` as Ollama's final generate answer."""
    choice = (answer.get("choices") or [{}])[0]
    msg = choice.get("message")
    out: dict[str, Any] = {"model": model, "created_at": rfc3339(),
                           "response": (msg.get("content") if msg else choice.get("text")) or ""}
    if msg and msg.get("reasoning_content"):
        out["thinking"] = msg["reasoning_content"]
    out.update(done=True, done_reason=done_reason(choice.get("finish_reason")),
               **stats(answer.get("usage"), answer.get("timings"), timing))
    return out


def embed_response(answer: dict[str, Any], model: str, timing: Timing, *, legacy: bool = False) -> dict[str, Any]:
    data = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
    vectors = [d.get("embedding") for d in data]
    if legacy:
        return {"embedding": vectors[0] if vectors else []}
    counts = stats(answer.get("usage"), None, timing)
    return {"model": model, "embeddings": vectors, "total_duration": counts["total_duration"],
            "load_duration": counts["load_duration"], "prompt_eval_count": counts.get("prompt_eval_count", 0)}


class SSEDecoder:
    """The ``data:`` payloads of an SSE byte stream, fed in arbitrary pieces. llama-server reports
    a failure mid-stream as an ``error:`` line; it comes out as ``{"error": ...}``."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                out.append(line[5:].strip().decode("utf-8", "replace"))
            elif line.startswith(b"error:"):
                text = line[6:].strip().decode("utf-8", "replace")
                try:
                    error: Any = json.loads(text)
                except json.JSONDecodeError:
                    error = text
                out.append(json.dumps({"error": error.get("error", error) if isinstance(error, dict) else error}))
        return out


class ChatStream:
    """OpenAI stream chunks -> Ollama NDJSON objects (``generate``: Ollama's generate shape).

    Content and thinking go out as they come; tool calls arrive in fragments and go out whole,
    in one line, when the backend finishes them. ``final()`` is the ``done`` line, with the
    counts and durations of the usage chunk."""

    def __init__(self, model: str, timing: Timing, *, generate: bool = False) -> None:
        self.model, self.timing, self.generate = model, timing, generate
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: Any = None
        self._usage: dict[str, Any] | None = None
        self._timings: dict[str, Any] | None = None

    def _line(self, content: str = "", thinking: str = "", calls: list[dict[str, Any]] | None = None,
              ) -> dict[str, Any]:
        if self.generate:
            out: dict[str, Any] = {"model": self.model, "created_at": rfc3339(), "response": content}
            if thinking:
                out["thinking"] = thinking
        else:
            msg: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                msg["thinking"] = thinking
            if calls:
                msg["tool_calls"] = calls
            out = {"model": self.model, "created_at": rfc3339(), "message": msg}
        out["done"] = False
        return out

    def feed(self, chunk: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        if chunk.get("timings"):
            self._timings = chunk["timings"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text") or ""
            thinking = delta.get("reasoning_content") or ""
            if text or thinking:
                yield self._line(text, thinking)
            for call in delta.get("tool_calls") or []:
                empty = {"id": "", "function": {"name": "", "arguments": ""}}
                acc = self._calls.setdefault(call.get("index", 0), empty)
                acc["id"] = call.get("id") or acc["id"]
                fn = call.get("function") or {}
                acc["function"]["name"] += fn.get("name") or ""
                acc["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                if self._calls and not self.generate:
                    calls = _ollama_calls([self._calls[i] for i in sorted(self._calls)])
                    self._calls = {}
                    if calls:
                        yield self._line(calls=calls)

    def final(self) -> dict[str, Any]:
        out = self._line()
        out.update(done=True, done_reason=done_reason(self._finish),
                   **stats(self._usage, self._timings, self.timing))
        return out
