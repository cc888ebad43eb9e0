"""faster-whisper behind OpenAI's ``POST /v1/audio/transcriptions``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

from aiohttp import web

from hal0.errors import AudioUnsupportedFormat
from hal0.runners.stt import transcriptions

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
                   temperature: float, words: bool = False) -> dict[str, Any]:
        from faster_whisper import decode_audio

        try:
            samples = decode_audio(io.BytesIO(audio))
        except Exception as e:  # PyAV raises a zoo of errors for data it cannot decode
            raise AudioUnsupportedFormat(f"the uploaded file is not audio hal0 can decode ({type(e).__name__})",
                                         param="file") from None
        segments, info = self._model.transcribe(samples, language=language, initial_prompt=prompt,
                                                temperature=temperature, beam_size=1, word_timestamps=words)
        segments = list(segments)
        segs = [{"id": i, "seek": s.seek, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
                 "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                 "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
                for i, s in enumerate(segments)]
        out = {"task": "transcribe", "language": info.language, "duration": round(info.duration, 3),
               "text": "".join(s["text"] for s in segs).strip(), "segments": segs}
        if words:
            out["words"] = [{"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3),
                             "probability": w.probability} for s in segments for w in s.words or ()]
        return out

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", transcriptions)
