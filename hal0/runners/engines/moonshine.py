"""Moonshine (useful-moonshine-onnx) behind OpenAI's ``POST /v1/audio/transcriptions``.

The model is a folder with ``encoder_model.onnx`` and ``decoder_model_merged.onnx`` (the
``onnx/merged/<tiny|base>/float`` files of UsefulSensors/moonshine); its name says the
variant. Audio is decoded by ``audio.decode`` (libsndfile, then ffmpeg) and resampled to
16 kHz with librosa, a dependency of useful-moonshine-onnx.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aiohttp import web

from hal0.errors import RequestInvalid
from hal0.runners.engines.audio import decode
from hal0.runners.stt import transcriptions

__all__ = ["MOONSHINE_FILES", "MoonshineEngine"]

MOONSHINE_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx")
RATE = 16000
WINDOW = 30 * RATE


class MoonshineEngine:
    kind = "moonshine"

    def __init__(self, args: argparse.Namespace) -> None:
        self.model_dir = Path(args.model)
        self.model_id = args.model_id or self.model_dir.name
        self.variant = "base" if "base" in self.model_id.lower() else "tiny"
        self._model: Any = None
        self._tokenizer: Any = None

    def load(self) -> None:
        import moonshine_onnx
        from moonshine_onnx import MoonshineOnnxModel

        missing = [f for f in MOONSHINE_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.model_dir} lacks {', '.join(missing)}")
        self._model = MoonshineOnnxModel(models_dir=str(self.model_dir), model_name=self.variant)
        self._tokenizer = moonshine_onnx.load_tokenizer()

    def transcribe(self, audio: bytes, language: str | None, prompt: str | None,
                   temperature: float, words: bool = False) -> dict[str, Any]:
        if words:
            raise RequestInvalid("Moonshine gives no word timestamps: drop `timestamp_granularities[]=word`, "
                                 "or use a whisper slot", param="timestamp_granularities")
        import librosa
        import numpy as np

        mono, rate = decode(audio)
        if rate != RATE:
            mono = librosa.resample(mono, orig_sr=rate, target_sr=RATE)
        mono = np.asarray(mono, dtype=np.float32)
        segments: list[dict[str, Any]] = []
        # Moonshine takes 0.1 s to 64 s at a time: longer audio goes in 30 s windows.
        for start in range(0, len(mono), WINDOW):
            window = mono[start:start + WINDOW]
            if len(window) < RATE // 10:
                break
            text = self._tokenizer.decode_batch(self._model.generate(window[None, :]))[0].strip()
            if text:
                segments.append({"id": len(segments), "seek": start, "start": round(start / RATE, 3),
                                 "end": round((start + len(window)) / RATE, 3), "text": " " + text, "tokens": [],
                                 "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0,
                                 "no_speech_prob": 0.0})
        return {"task": "transcribe", "language": language or "en", "duration": round(len(mono) / RATE, 3),
                "text": "".join(s["text"] for s in segments).strip(), "segments": segments}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", transcriptions)
