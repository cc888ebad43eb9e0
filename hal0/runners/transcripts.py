"""Rendering a transcription in OpenAI's response formats (json, text, srt, verbose_json, vtt)."""

from __future__ import annotations

from typing import Any

__all__ = ["FORMATS", "render_transcript", "timestamp"]

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def timestamp(seconds: float, sep: str) -> str:
    """``HH:MM:SS<sep>mmm``; ``sep`` is "," for SRT and "." for WebVTT."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render_transcript(result: dict[str, Any], fmt: str) -> tuple[Any, str]:
    """(body, content type) for ``fmt``; JSON bodies are returned as dicts."""
    segments = result["segments"]
    if fmt == "json":
        return {"text": result["text"]}, "application/json"
    if fmt == "verbose_json":
        return result, "application/json"
    if fmt == "text":
        return result["text"] + "\n", "text/plain"
    if fmt == "srt":
        blocks = [f"{i}\n{timestamp(s['start'], ',')} --> {timestamp(s['end'], ',')}\n{s['text'].strip()}\n"
                  for i, s in enumerate(segments, 1)]
        return "\n".join(blocks), "text/plain"
    blocks = [f"{timestamp(s['start'], '.')} --> {timestamp(s['end'], '.')}\n{s['text'].strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks), "text/vtt"
