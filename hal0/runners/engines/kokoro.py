"""Kokoro (kokoro-onnx) behind OpenAI's ``POST /v1/audio/speech`` and ``GET /v1/audio/voices``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from aiohttp import web

from hal0.errors import RequestInvalid
from hal0.runners.base import ENGINE
from hal0.runners.engines.audio import CONTENT_TYPES, STREAMED, check_format, encode, pcm16, wav_header
from hal0.web.http import json_response, parse_json

__all__ = ["OPENAI_VOICES", "KokoroEngine"]

OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
MAX_INPUT = 4096
SAMPLE_RATE = 24000


class KokoroEngine:
    kind = "kokoro"

    def __init__(self, args: argparse.Namespace) -> None:
        self.model = Path(args.model)
        self.model_id = args.model_id or self.model.stem
        self.voices_file = Path(args.voices) if args.voices else self._find_voices()
        self.default_voice: str | None = args.default_voice
        self.voices: list[str] = []
        self._kokoro: Any = None

    def _find_voices(self) -> Path:
        found = sorted(self.model.parent.glob("voices*.npz")) + sorted(self.model.parent.glob("voices*.bin"))
        return found[0] if found else self.model.parent / "voices.npz"

    def load(self) -> None:
        from kokoro_onnx import Kokoro

        for f in (self.model, self.voices_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f} is missing")
        self._kokoro = Kokoro(str(self.model), str(self.voices_file))
        self.voices = self._kokoro.get_voices()
        if self.default_voice not in self.voices:
            self.default_voice = self.voices[0]

    def voice_for(self, name: str) -> str:
        """An installed voice, or the default one for an OpenAI voice name. Raises RequestInvalid."""
        if name in self.voices:
            return name
        if name in OPENAI_VOICES and self.default_voice:
            return self.default_voice
        raise RequestInvalid(f"unknown voice {name!r}; installed: {', '.join(self.voices)} "
                             f"(OpenAI's names map to {self.default_voice})", param="voice")

    def stream(self, text: str, voice: str, speed: float) -> AsyncGenerator[tuple[Any, int], None]:
        """Audio chunks (float samples, rate) as Kokoro produces them, sentence by sentence."""
        return self._kokoro.create_stream(text, voice, speed=speed, lang="en-us")  # type: ignore[no-any-return]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/speech", _speech)
        app.router.add_get("/v1/audio/voices", _voices)


def _request(body: dict[str, Any], engine: KokoroEngine) -> tuple[str, str, str, float]:
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise RequestInvalid("`input` must be a non-empty string", param="input")
    if len(text) > MAX_INPUT:
        raise RequestInvalid(f"`input` is {len(text)} characters; the limit is {MAX_INPUT}", param="input")
    voice = body.get("voice")
    if not isinstance(voice, str):
        raise RequestInvalid("`voice` is required", param="voice")
    fmt = body.get("response_format") or "mp3"
    check_format(fmt)
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
        raise RequestInvalid("`speed` must be a number from 0.25 to 4.0", param="speed")
    return text, engine.voice_for(voice), fmt, float(speed)


async def _speech(request: web.Request) -> web.StreamResponse:
    runner = request.app[ENGINE]
    engine: KokoroEngine = runner.engine  # type: ignore[assignment]
    text, voice, fmt, speed = _request(parse_json(await request.read()), engine)
    runner.require_loaded()
    resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES[fmt]})
    chunks: list[Any] = []
    async with runner.lock, contextlib.aclosing(engine.stream(text, voice, speed)) as stream:
        # Closing the stream (also when the client went away) stops the synthesis.
        async for samples, rate in stream:
            if fmt not in STREAMED:
                chunks.append(samples)
                continue
            if not resp.prepared:
                await resp.prepare(request)
                if fmt == "wav":
                    await resp.write(wav_header(rate))
            await resp.write(pcm16(samples))
    if fmt not in STREAMED:
        data = await asyncio.to_thread(encode, chunks, SAMPLE_RATE, fmt)
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data)
    await resp.write_eof()
    return resp


async def _voices(request: web.Request) -> web.Response:
    engine: KokoroEngine = request.app[ENGINE].engine  # type: ignore[assignment]
    request.app[ENGINE].require_loaded()
    return json_response({"object": "list", "default": engine.default_voice,
                          "data": [{"id": v, "object": "voice"} for v in engine.voices],
                          "voices": [{"id": v, "name": v} for v in engine.voices],  # Open WebUI's shape
                          "aliases": {v: engine.default_voice for v in OPENAI_VOICES}})
