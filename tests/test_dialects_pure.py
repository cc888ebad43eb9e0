"""The dialects' pure parts, without a server: SSE parsing, the FIM and Responses translations,
the router status mapping, and the response store's bounds and ownership."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hal0.dialects.fim import InfillStream, completion_from_infill, infill_request, split_usage
from hal0.dialects.responses_chat import ChatStream, chat_request, response_from_chat
from hal0.dialects.responses_store import ResponseStore
from hal0.dialects.sse import SseEvent, SseParser
from hal0.errors import SlotDisabled, SlotLoading, anthropic_envelope
from hal0.server.model_status_api import router_event


def _data(lines: list[bytes]) -> list[object]:
    out: list[object] = []
    for b in lines:
        for event in SseParser().feed(b):
            out.append(event.data if event.data == "[DONE]" else json.loads(event.data))
    return out


def test_sse_parser_joins_split_chunks_and_crlf() -> None:
    p = SseParser()
    assert p.feed(b"event: a\r\ndata: {\"x\"") == []
    assert p.feed(b": 1}\r\n\r\ndata: [DONE]\n\n: comment\n\n") == [SseEvent("a", '{"x": 1}'), SseEvent(None, "[DONE]")]


def test_completion_stream_usage_moves_to_its_own_chunk() -> None:
    last = SseEvent(None, json.dumps({"id": "c", "choices": [{"text": "", "finish_reason": "length"}],
                                      "usage": {"completion_tokens": 2}}))
    first, usage = _data(split_usage(last))
    assert first == {"id": "c", "choices": [{"text": "", "finish_reason": "length"}]}
    assert usage == {"id": "c", "choices": [], "usage": {"completion_tokens": 2}}
    assert split_usage(SseEvent(None, "[DONE]")) == [b"data: [DONE]\n\n"]


def test_fim_request_and_answers() -> None:
    body = {"prompt": ["a = "], "suffix": "\n", "max_tokens": 5, "temperature": 0, "input_extra": [], "n": 1}
    assert infill_request(body) == {"input_prefix": "a = ", "input_suffix": "\n", "temperature": 0,
                                    "input_extra": [], "n_predict": 5}
    done = completion_from_infill({"content": "1", "stop_type": "limit", "tokens_evaluated": 7,
                                   "tokens_predicted": 5}, "m")
    assert done["choices"][0] == {"text": "1", "index": 0, "logprobs": None, "finish_reason": "length"}
    assert done["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    stream = InfillStream("m", include_usage=True)
    chunks = _data(stream.feed(SseEvent(None, '{"content": "x", "stop": false}')) + stream.feed(
        SseEvent(None, '{"content": "", "stop": true, "stop_type": "eos", "tokens_evaluated": 3, '
                       '"tokens_predicted": 1}')))
    assert [c["choices"][0]["text"] for c in chunks[:2]] == ["x", ""]  # type: ignore[index]
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert chunks[2]["choices"] == [] and chunks[2]["usage"]["total_tokens"] == 4  # type: ignore[index]
    assert chunks[3] == "[DONE]"


def test_responses_to_chat_and_back() -> None:
    body = {"model": "m", "instructions": "Be brief.", "max_output_tokens": 9, "stream": True,
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}}}
    items = [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
             {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c1", "output": "42"}]
    chat = chat_request(body, items)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    assert chat["max_tokens"] == 9 and chat["stream_options"] == {"include_usage": True}
    assert chat["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"]["json_schema"]["name"] == "s"
    resp = response_from_chat({"model": "m", "created": 5, "choices": [{"finish_reason": "tool_calls", "message": {
        "content": "ok", "tool_calls": [{"id": "c2", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    assert [o["type"] for o in resp["output"]] == ["message", "function_call"]
    assert resp["output"][1]["call_id"] == "c2" and resp["usage"]["input_tokens"] == 3


def test_chat_stream_becomes_response_events() -> None:
    s = ChatStream()
    out = s.start()
    out += s.feed({"model": "m", "choices": [{"delta": {"content": "he"}}]})
    out += s.feed({"choices": [{"delta": {"content": "llo"}, "finish_reason": "length"}]})
    out += s.feed({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    out += s.finish()
    events = _data(out)
    kinds = [e["type"] for e in events]  # type: ignore[index]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.incomplete"]
    assert s.response is not None and s.response["output"][0]["content"][0]["text"] == "hello"
    assert s.response["usage"] == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


def test_router_events() -> None:
    line = router_event("slot.state", {"slot": "primary", "state": "warming"}, {})
    assert line is not None and json.loads(line[6:]) == {
        "model": "primary", "event": "status_change", "data": {"status": "loading"}}
    failed = router_event("slot.state", {"slot": "p", "state": "error", "message": "boom"}, {})
    assert failed is not None and json.loads(failed[6:])["data"] == {"status": "unloaded", "failed": True,
                                                                     "message": "boom"}
    pull = router_event("model.pull", {"id": "j1", "state": "running", "done": 25, "total": 100}, {"j1": "primary"})
    assert pull is not None and json.loads(pull[6:])["data"] == {"status": "downloading", "progress": {
        "stages": ["download"], "current": "download", "value": 0.25}}
    assert router_event("model.pull", {"id": "j2", "state": "running"}, {"j1": "primary"}) is None
    assert router_event("slot.config", {"slot": "p"}, {}) is None


def test_store_bounds_and_owners(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path, max_count=3, max_bytes=10_000)
    for i in range(5):
        store.put("tok1", {"id": f"resp_{i}"}, [{"role": "user", "content": str(i)}])
        os.utime(tmp_path / "tok1" / f"resp_{i}.json", ns=(i * 10**9, i * 10**9))  # distinct ages
    store.put("tok1", {"id": "resp_5"}, [])
    assert sorted(p.stem for p in (tmp_path / "tok1").glob("*.json")) == ["resp_3", "resp_4", "resp_5"]
    assert store.get("tok2", "resp_5") is None and not store.delete("tok2", "resp_5")
    assert store.get("tok1", "../tok1/resp_5") is None
    big = ResponseStore(tmp_path, max_count=100, max_bytes=200)
    big.put("tok3", {"id": "resp_a", "pad": "x" * 150}, [])
    big.put("tok3", {"id": "resp_b", "pad": "y" * 150}, [])
    assert [p.stem for p in (tmp_path / "tok3").glob("*.json")] == ["resp_b"]


def test_error_headers_and_anthropic_shape() -> None:
    assert SlotDisabled("off", slot="x").headers() == {"x-should-retry": "false"}
    assert SlotLoading("wait", retry_after=5).headers() == {"Retry-After": "5"}
    assert anthropic_envelope(SlotLoading("wait"))["error"]["type"] == "overloaded_error"


def test_anthropic_errors_from_backend_and_in_a_cut_stream() -> None:
    from hal0.dialects.anthropic import ANTHROPIC, from_backend

    assert from_backend(400, {"error": {"code": 400, "message": "bad", "type": "invalid_request_error"}}) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    already = {"type": "error", "error": {"type": "api_error", "message": "x"}}
    assert from_backend(500, already) == already
    assert from_backend(503, "text")["error"] == {"type": "overloaded_error", "message": "text"}
    event = SseParser().feed(ANTHROPIC.sse(SlotLoading("primary is still warming")))[0]
    assert event.event == "error" and json.loads(event.data)["error"]["type"] == "overloaded_error"
