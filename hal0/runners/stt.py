"""``POST /v1/audio/transcriptions`` for every speech-to-text runner: form parsing, checks and
the response formats. An engine only turns audio bytes into a transcript."""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import BodyPartReader, web

from hal0.errors import RequestInvalid
from hal0.runners.base import ENGINE
from hal0.runners.transcripts import FORMATS, render_transcript

__all__ = ["SttEngine", "transcriptions"]


class SttEngine(Protocol):
    def transcribe(self, audio: bytes, language: str | None, prompt: str | None,
                   temperature: float, words: bool = False) -> dict[str, Any]:
        """A verbose_json-shaped transcript (with ``words``, each word's start and end, where the
        engine can: else RequestInvalid); raises AudioUnsupportedFormat for undecodable audio."""
        ...


async def _form(request: web.Request) -> dict[str, Any]:
    if not request.content_type.startswith("multipart/form-data"):
        raise RequestInvalid("send the audio as multipart/form-data with a `file` field", param="file")
    fields: dict[str, Any] = {}
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue  # nested multiparts are not part of the API
        if part.name == "file":
            fields["file"] = await part.read()
        elif part.name in ("timestamp_granularities[]", "timestamp_granularities"):
            fields.setdefault("timestamp_granularities", []).append((await part.text()).strip())
        elif part.name:
            fields[part.name] = (await part.text()).strip()
    return fields


async def transcriptions(request: web.Request) -> web.Response:
    fields = await _form(request)
    if "file" not in fields:
        raise RequestInvalid("`file` is required", param="file")
    if not fields["file"]:
        raise RequestInvalid("the uploaded file is empty", param="file")
    fmt = fields.get("response_format") or "json"
    if fmt not in FORMATS:
        raise RequestInvalid(f"`response_format` must be one of {', '.join(FORMATS)}", param="response_format")
    try:
        temperature = float(fields.get("temperature") or 0)
    except ValueError:
        raise RequestInvalid("`temperature` must be a number", param="temperature") from None
    granularities = fields.get("timestamp_granularities", [])
    if not set(granularities) <= {"word", "segment"}:
        raise RequestInvalid("`timestamp_granularities[]` takes `word` and `segment`", param="timestamp_granularities")
    runner = request.app[ENGINE]
    engine: SttEngine = runner.engine  # type: ignore[assignment]
    result = await runner.run_blocking(engine.transcribe, fields["file"], fields.get("language") or None,
                                       fields.get("prompt") or None, temperature, "word" in granularities)
    body, content_type = render_transcript(result, fmt)
    if content_type == "application/json":
        return web.Response(text=json.dumps(body), content_type=content_type)
    return web.Response(text=body, content_type=content_type)
