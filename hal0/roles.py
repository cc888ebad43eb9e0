"""Which slot serves what: the one table of roles (SPEC sections 3 and 5).

A slot has exactly one *kind* (a ``Modality``): a voice or image provider's, else a llama-server
flag (``--embedding`` / ``--reranking``), else the built-in text slot's name (``embed``), else chat. A ``/v1`` route
asks for one kind. Resolution, ``/v1/models``, the capability cards and the llama-server
provider all read this module; nothing else decides a slot's role.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["BUILTIN_KINDS", "CAPABILITIES", "ROUTES", "Modality", "default_slot", "route_kind", "slot_kind"]


class Modality(StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"
    TRANSCRIPTION = "audio.transcriptions"
    SPEECH = "audio.speech"
    IMAGES = "images"


M = Modality
# Each /v1 route: the kind of slot that serves it, and the slot it falls back to.
ROUTES: dict[str, tuple[Modality, str]] = {
    "/v1/chat/completions": (M.CHAT, "primary"),
    "/v1/completions": (M.CHAT, "primary"),
    "/v1/messages": (M.CHAT, "primary"),  # Anthropic Messages
    "/v1/messages/count_tokens": (M.CHAT, "primary"),
    "/v1/responses": (M.CHAT, "primary"),  # OpenAI Responses
    "/infill": (M.CHAT, "primary"),  # llama.cpp's fill-in-the-middle
    "/v1/embeddings": (M.EMBEDDINGS, "embed"),
    "/v1/rerankings": (M.RERANK, "embed-rerank"),
    "/v1/rerank": (M.RERANK, "embed-rerank"),
    "/v1/audio/transcriptions": (M.TRANSCRIPTION, "stt"),
    "/v1/audio/speech": (M.SPEECH, "tts"),
    "/v1/audio/voices": (M.SPEECH, "tts"),
    "/v1/images/generations": (M.IMAGES, "img"),
}
# What a slot of each kind can do, in the words clients filter on (``/v1/models`` ``capabilities``);
# a registered model's own capabilities (vision, say) are added to these.
CAPABILITIES: dict[Modality, tuple[str, ...]] = {
    M.CHAT: ("chat", "completion", "tools"), M.EMBEDDINGS: ("embed",), M.RERANK: ("rerank",),
    M.TRANSCRIPTION: ("stt",), M.SPEECH: ("tts",), M.IMAGES: ("image",),
}
BUILTIN_KINDS: dict[str, Modality] = {
    "primary": M.CHAT, "embed": M.EMBEDDINGS, "embed-rerank": M.RERANK, "stt": M.TRANSCRIPTION,
    "tts": M.SPEECH, "img": M.IMAGES,
}
# Providers that serve one kind whatever the slot is called.
_PROVIDER_KINDS: dict[str, Modality] = {
    "whisper": M.TRANSCRIPTION, "moonshine": M.TRANSCRIPTION, "kokoro": M.SPEECH, "comfyui": M.IMAGES,
}
# llama-server and FLM serve text: chat unless a flag (or a built-in text slot's name) says otherwise.
_TEXT_KINDS = frozenset({M.CHAT, M.EMBEDDINGS, M.RERANK})
_LLAMA_FLAGS: dict[str, Modality] = {
    "--embedding": M.EMBEDDINGS, "--embeddings": M.EMBEDDINGS, "--reranking": M.RERANK, "--rerank": M.RERANK,
}


def slot_kind(name: str, provider: str, extra_args: Iterable[str] = ()) -> Modality:
    """The one kind of request a slot serves: a single-purpose provider's; else a llama-server
    flag (what the backend is started with); else a built-in text slot's name; else chat."""
    if provider in _PROVIDER_KINDS:
        return _PROVIDER_KINDS[provider]
    if provider == "llama-server":
        for arg in extra_args:
            if arg in _LLAMA_FLAGS:
                return _LLAMA_FLAGS[arg]
    builtin = BUILTIN_KINDS.get(name)
    return builtin if builtin in _TEXT_KINDS else M.CHAT


def route_kind(path: str) -> Modality:
    return ROUTES[path][0]


def default_slot(path: str) -> str:
    return ROUTES[path][1]
