"""faster-whisper behind OpenAI's ``POST /v1/audio/transcriptions``."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from hal0.errors import AudioUnsupportedFormat, RequestInvalid
from hal0.runners.base import ENGINE
from hal0.runners.transcripts import FORMATS, render_transcript

__all__ = ["WhisperEngine"]


class WhisperEngine:
    kind = "whisper"

    def __init__(self, args: argparse.Namespace) -> None:
        self.model_dir = Path(args.model)
        self.model_id = args.model_id or self.model_dir.name
        self.threads = args.threads
        self._model: Any = None

    def load(self) -> None:
        from faster_whisper import WhisperModel

        if not (self.model_dir / "model.bin").is_file():
            raise FileNotFoundError(f"{self.model_dir} has no model.bin (a CTranslate2 Whisper model folder)")
        self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type="int8",
                                   cpu_threads=self.threads)

    def transcribe(self, audio: bytes, language: str | None, prompt: str | None,
                   temperature: float) -> dict[str, Any]:
        from faster_whisper import decode_audio

        try:
            samples = decode_audio(io.BytesIO(audio))
        except Exception as e:  # PyAV raises a zoo of errors for data it cannot decode
            raise AudioUnsupportedFormat(f"the uploaded file is not audio hal0 can decode ({type(e).__name__})",
                                         param="file") from None
        segments, info = self._model.transcribe(samples, language=language, initial_prompt=prompt,
                                                temperature=temperature, beam_size=1)
        segs = [{"id": i, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                 "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                 "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
                for i, s in enumerate(segments)]
        return {"task": "transcribe", "language": info.language, "duration": round(info.duration, 3),
                "text": "".join(s["text"] for s in segs).strip(), "segments": segs}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", _transcriptions)


async def _form(request: web.Request) -> dict[str, Any]:
    if not request.content_type.startswith("multipart/form-data"):
        raise RequestInvalid("send the audio as multipart/form-data with a `file` field", param="file")
    fields: dict[str, Any] = {}
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            continue  # nested multiparts are not part of the API
        if part.name == "file":
            fields["file"] = await part.read()
        elif part.name:
            fields[part.name] = (await part.text()).strip()
    return fields


async def _transcriptions(request: web.Request) -> web.Response:
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
    runner = request.app[ENGINE]
    engine: WhisperEngine = runner.engine  # type: ignore[assignment]
    result = await runner.run_blocking(engine.transcribe, fields["file"], fields.get("language") or None,
                                       fields.get("prompt") or None, temperature)
    body, content_type = render_transcript(result, fmt)
    if content_type == "application/json":
        return web.Response(text=json.dumps(body), content_type=content_type)
    return web.Response(text=body, content_type=content_type)
