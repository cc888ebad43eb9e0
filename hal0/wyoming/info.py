"""The ``info`` a Wyoming ``describe`` gets, generated from the slots: one program per slot of
the port's kind (stt or tts), its model, languages and voices, and who made them.

Each port describes only its own service: Home Assistant makes an entity for every service an
``info`` lists, so listing both on both ports would give it two of each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice

from hal0 import __version__
from hal0.roles import Modality
from hal0.slots import SlotSnapshot

__all__ = ["HAL0", "Voices", "asr_info", "known_voices", "tts_info"]

HAL0 = Attribution(name="hal0", url="")  # no public home page to point to
# Who made each engine and its models (the program is hal0's slot, run by the engine).
_ENGINES: dict[str, tuple[Attribution, Attribution]] = {
    "whisper": (Attribution("SYSTRAN (faster-whisper)", "https://github.com/SYSTRAN/faster-whisper"),
                Attribution("OpenAI (Whisper)", "https://github.com/openai/whisper")),
    "moonshine": (Attribution("Useful Sensors (Moonshine)", "https://github.com/usefulsensors/moonshine"),
                  Attribution("Useful Sensors (Moonshine)", "https://github.com/usefulsensors/moonshine")),
    "kokoro": (Attribution("thewh1teagle (kokoro-onnx)", "https://github.com/thewh1teagle/kokoro-onnx"),
               Attribution("hexgrad (Kokoro-82M)", "https://huggingface.co/hexgrad/Kokoro-82M")),
}
# Whisper's languages (its tokenizer's table); an English-only model (`.en`) knows only English.
_WHISPER_TABLE = """af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw
he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa
pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo yue zh"""
WHISPER_LANGUAGES = tuple(_WHISPER_TABLE.split())
# The Kokoro runner phonemises every text as English (lang en-us): each voice speaks English,
# with the accent of the language it was made for.
KOKORO_LANGUAGES = ("en",)


@dataclass(frozen=True)
class Voices:
    """A tts model's voices as its engine lists them (``GET /v1/audio/voices``)."""

    names: tuple[str, ...]
    default: str | None


def known_voices(snap: SlotSnapshot, voices: Mapping[str, Voices]) -> Voices | None:
    """The voices of what the slot runs, else of what it will load (by model id or reference)."""
    for key in (snap.model, snap.model_ref, snap.configured):
        if key and key in voices:
            return voices[key]
    return None


def _attribution(provider: str) -> tuple[Attribution, Attribution]:
    return _ENGINES.get(provider, (HAL0, HAL0))


def _languages(snap: SlotSnapshot, model: str) -> list[str]:
    if snap.provider == "whisper" and not any(t in model.lower() for t in (".en", "-en", "_en")):
        return list(WHISPER_LANGUAGES)
    return ["en"]  # Moonshine and English-only Whisper models


def _model_name(snap: SlotSnapshot) -> str:
    return snap.model or snap.configured or snap.name


def _of_kind(snaps: Iterable[SlotSnapshot], kind: Modality) -> list[SlotSnapshot]:
    return [s for s in snaps if s.kind == kind]


def asr_info(snaps: Iterable[SlotSnapshot]) -> Info:
    """One speech-to-text program per stt slot (built-ins first, the default program)."""
    programs = []
    for snap in _of_kind(snaps, Modality.TRANSCRIPTION):
        program_by, model_by = _attribution(snap.provider)
        model = _model_name(snap)
        installed = snap.enabled and bool(snap.model or snap.configured)
        programs.append(AsrProgram(
            name=snap.name, attribution=program_by, installed=installed, version=__version__,
            description=f"{snap.provider} in hal0's {snap.name} slot",
            models=[AsrModel(name=model, attribution=model_by, installed=installed, version=None,
                             description=f"{model} ({snap.state})", languages=_languages(snap, model))]))
    return Info(asr=programs)


def tts_info(snaps: Iterable[SlotSnapshot], voices: Mapping[str, Voices]) -> Info:
    """One text-to-speech program per tts slot with the voices of its model (known once the slot
    has run it: ``voices`` by model name)."""
    programs = []
    for snap in _of_kind(snaps, Modality.SPEECH):
        program_by, voice_by = _attribution(snap.provider)
        model = _model_name(snap)
        known = known_voices(snap, voices)
        names = known.names if known else ()
        if known and known.default in names:  # the default voice first: clients pick the first one
            names = (known.default, *(n for n in names if n != known.default))
        languages = list(KOKORO_LANGUAGES) if snap.provider == "kokoro" else ["en"]
        programs.append(TtsProgram(
            name=snap.name, attribution=program_by, installed=snap.enabled and bool(snap.model or snap.configured),
            version=__version__,
            description=f"{snap.provider} in hal0's {snap.name} slot ({model})", supports_synthesize_streaming=True,
            voices=[TtsVoice(name=n, attribution=voice_by, installed=True, version=None,
                             description=f"{n} ({model})", languages=languages) for n in names]))
    return Info(tts=programs)
