"""Audio encoding for speech: PCM16 and streamed WAV always; flac, mp3 and opus through
soundfile (libsndfile) when the engine's virtualenv has it; aac through ffmpeg when installed."""

from __future__ import annotations

import importlib.util
import io
import shutil
import struct
import subprocess
from typing import Any

from hal0.errors import AudioUnsupportedFormat

__all__ = ["CONTENT_TYPES", "STREAMED", "check_format", "encode", "pcm16", "wav_header"]

CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}
STREAMED = ("wav", "pcm")  # written as they are synthesised; the others are encoded at the end
_SOUNDFILE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}


def check_format(fmt: str) -> None:
    """Raise AudioUnsupportedFormat unless ``fmt`` can be produced on this machine."""
    if fmt not in CONTENT_TYPES:
        raise AudioUnsupportedFormat(f"response_format must be one of {', '.join(CONTENT_TYPES)}",
                                     param="response_format")
    if fmt in _SOUNDFILE and importlib.util.find_spec("soundfile") is None and shutil.which("ffmpeg") is None:
        raise AudioUnsupportedFormat(f"{fmt} needs an encoder: install the soundfile package in the tts engine's "
                                     "virtualenv or ffmpeg (apt-get install ffmpeg); wav and pcm always work",
                                     param="response_format")
    if fmt == "aac" and shutil.which("ffmpeg") is None:
        raise AudioUnsupportedFormat("aac needs ffmpeg, which is not installed (apt-get install ffmpeg); "
                                     "wav, pcm, flac, mp3 and opus work without it", param="response_format")


def pcm16(samples: Any) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM."""
    import numpy as np

    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()  # type: ignore[no-any-return]


def wav_header(rate: int) -> bytes:
    """A mono 16-bit WAV header with unknown length, for a stream (players read to the end)."""
    unknown = 0xFFFFFFFF
    fmt_chunk = struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)  # PCM, mono, 16-bit
    return b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt " + fmt_chunk + b"data" + struct.pack("<I", unknown)


def encode(chunks: list[Any], rate: int, fmt: str) -> bytes:
    """A whole clip, given as chunks of float samples, in a compressed format (check_format first)."""
    import numpy as np

    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if fmt in _SOUNDFILE and importlib.util.find_spec("soundfile") is not None:
        import soundfile

        buf = io.BytesIO()
        container, subtype = _SOUNDFILE[fmt]
        soundfile.write(buf, samples, rate, format=container, subtype=subtype)
        return buf.getvalue()
    args = {"aac": ["-f", "adts"], "mp3": ["-f", "mp3"], "opus": ["-c:a", "libopus", "-f", "ogg"],
            "flac": ["-f", "flac"]}[fmt]
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(rate),
                           "-ac", "1", "-i", "pipe:0", *args, "pipe:1"], input=pcm16(samples),
                          capture_output=True, check=True)
    return done.stdout


def decode(audio: bytes) -> tuple[Any, int]:
    """Mono float32 samples and their rate: libsndfile (WAV, FLAC, OGG, MP3) first, then ffmpeg
    for other containers (WebM, M4A, ...) when it is installed. Raises AudioUnsupportedFormat."""
    import numpy as np
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(audio), dtype="float32", always_2d=True)
        return samples.mean(axis=1), int(rate)
    except Exception as e:  # libsndfile's errors for data it cannot decode
        reason = type(e).__name__
    if shutil.which("ffmpeg") is None:
        raise AudioUnsupportedFormat(
            f"the upload is not WAV, FLAC, OGG or MP3 audio ({reason}); other containers (WebM, M4A, ...) need "
            "ffmpeg, which is not installed (apt-get install ffmpeg)", param="file")
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1",
                           "-ar", "16000", "pipe:1"], input=audio, capture_output=True)
    if done.returncode != 0 or not done.stdout:
        raise AudioUnsupportedFormat("the upload is not audio ffmpeg can decode", param="file")
    return np.frombuffer(done.stdout, dtype="<f4"), 16000
