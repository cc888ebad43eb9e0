"""One Wyoming connection: events read within bounds, each answered through the dispatcher the
way its /v1 twin is (the same resolution, wake, single flight, admission and errors).

``wyoming.event.async_read_event`` reads ``data_length`` and ``payload_length`` bytes as a
header line announces them and does not check the shape of what it parses, so a connection
reads through ``_BoundedReader`` and treats any failure to parse as a malformed event: that,
and an event over the limits, ends this connection (after an ``error`` event) and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiohttp
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, Eventable, async_read_event
from wyoming.info import Describe, Info, SelectProgram
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from hal0.dispatch.dispatcher import Dispatcher
from hal0.dispatch.h1 import BackendError
from hal0.dispatch.multipart import encode_form
from hal0.errors import Hal0Error, RequestInvalid, RequestMalformed, RequestTooLarge, SlotUnreachable
from hal0.roles import Modality
from hal0.wyoming.audio import Recording, WavStream

__all__ = ["MAX_LINE", "MAX_PART", "Context", "SttConnection", "TtsConnection"]

log = logging.getLogger("hal0.wyoming")
MAX_LINE = 64 * 1024  # an event's header line (asyncio's StreamReader limit)
MAX_PART = 1024 * 1024  # an event's data or payload (Home Assistant sends audio in a few KB)
MAX_STREAM_TEXT = 64 * 1024  # text of a streamed synthesis waiting for the end of its sentence
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？…])\s+")
E = TypeVar("E", bound=Eventable)


@dataclass(frozen=True)
class Context:
    """What a connection needs from the service."""

    dispatcher: Dispatcher
    stt_info: Callable[[], Awaitable[Info]]
    tts_info: Callable[[], Awaitable[Info]]
    max_audio_bytes: int
    idle_timeout_s: float
    # The slot of a program or model name ``describe`` listed for a kind (None: not one of them).
    slot_for: Callable[[str, Modality], str | None]


class _BoundedReader:
    """The reader ``async_read_event`` gets: it refuses a header line over MAX_LINE (asyncio's
    limit) and a data or payload part over MAX_PART before reading it, saying why in ``refused``."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.refused = ""
        self.eof = False  # the client closed the connection (else a None event was unparseable)

    async def readline(self) -> bytes:
        try:
            line = await self._reader.readline()
        except ValueError:
            self.refused = f"an event header line over {MAX_LINE} bytes"
            raise
        self.eof = not line
        return line

    async def readexactly(self, n: int) -> bytes:
        if isinstance(n, bool) or not isinstance(n, int) or n > MAX_PART:
            self.refused = f"an event part of {n!r} bytes (the limit is {MAX_PART})"
            raise ValueError(self.refused)
        return await self._reader.readexactly(n)


def _parse(cls: type[E], event: Event) -> E:
    """The typed event; raises RequestMalformed for data of the wrong shape."""
    try:
        return cast(E, cls.from_event(event))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RequestMalformed(f"malformed {event.type} event ({type(e).__name__}: {e})") from None


def _error_event(e: Hal0Error) -> Event:
    code = e.details.get("backend_code") or e.code
    return Error(text=e.message, code=str(code)).event()


class _Connection(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: Context) -> None:
        super().__init__(reader, writer)
        self._in = _BoundedReader(reader)
        self._ctx = ctx
        self._program: str | None = None  # select-program: a slot name

    async def run(self) -> None:
        """Events until the client leaves, sends a malformed or oversized event, or hal0 stops.
        Never raises (a failure ends this connection only); cancellable."""
        try:
            while await self._next():
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception:
            log.exception("a Wyoming connection failed")
        finally:
            self.writer.close()

    async def _next(self) -> bool:
        """Read and handle one event; False ends the connection."""
        try:
            async with asyncio.timeout(self._ctx.idle_timeout_s):
                event = await async_read_event(cast(asyncio.StreamReader, self._in))
        except TimeoutError:  # a client that vanished without closing must not hold its place for ever
            log.info("closing a Wyoming connection: no event for %g s", self._ctx.idle_timeout_s)
            return False
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        except Exception as e:  # the library parses without checking shapes (KeyError, AttributeError, ...)
            self._in.refused = f"a malformed event ({type(e).__name__})"
            event = None
        if event is None:
            if not self._in.eof:
                self._in.refused = self._in.refused or "a malformed event"
            if self._in.refused:  # else the client closed the connection
                log.info("closing a Wyoming connection: it sent %s", self._in.refused)
                await self.write_event(Error(text=f"hal0 closes this connection: it sent {self._in.refused}",
                                             code=RequestMalformed.code).event())
            return False
        if not isinstance(event.type, str) or not isinstance(event.data, dict):
            await self.write_event(Error(text="malformed event", code=RequestMalformed.code).event())
            return False
        try:
            return await self.handle_event(event)
        except (RequestMalformed, RequestTooLarge) as e:
            await self.write_event(_error_event(e))
            return False
        except Hal0Error as e:
            await self.write_event(_error_event(e))
            return True

    kind: Modality

    def _model(self, name: object) -> str | None:
        """What to resolve the request with: a model or program named in the request, else the
        program the client selected, else (None) the route's default slot. A name ``describe``
        listed becomes its slot, so it works whether or not the slot runs that model now."""
        name = name or self._program
        if name is None:
            return None
        if not isinstance(name, str):
            raise RequestMalformed(f"a program or model name must be a string, not {name!r}", param="name")
        return self._ctx.slot_for(name, self.kind) or name

    async def _describe_or_select(self, event: Event, info: Callable[[], Awaitable[Info]]) -> bool:
        if Describe.is_type(event.type):
            await self.write_event((await info()).event())
            return True
        if SelectProgram.is_type(event.type):
            name = _parse(SelectProgram, event).name
            if not isinstance(name, str):
                raise RequestMalformed(f"a program name must be a string, not {name!r}", param="name")
            self._program = name or None
            return True
        return False


def _language(language: str | None) -> str | None:
    """A language tag's primary subtag (Whisper takes `en`, not `en-US`); RequestInvalid if it is
    no language tag."""
    if not language:
        return None
    if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
        raise RequestInvalid(f"{language!r} is not a language code", param="language")
    return re.split(r"[-_]", language)[0].lower()


class SttConnection(_Connection):
    """``transcribe`` + ``audio-start``/``-chunk``/``-stop`` → ``transcript`` (from the stt slot)."""

    kind = Modality.TRANSCRIPTION

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: Context) -> None:
        super().__init__(reader, writer, ctx)
        self._request: Transcribe | None = None
        self._recording: Recording | None = Recording(ctx.max_audio_bytes)  # None: this one failed

    async def handle_event(self, event: Event) -> bool:
        if await self._describe_or_select(event, self._ctx.stt_info):
            return True
        if Transcribe.is_type(event.type):
            self._request = _parse(Transcribe, event)
            self._recording = Recording(self._ctx.max_audio_bytes)
        elif AudioStart.is_type(event.type):
            self._recording = Recording(self._ctx.max_audio_bytes)
            self._record(lambda rec: rec.start(_parse(AudioStart, event)))
        elif AudioChunk.is_type(event.type):
            chunk = _parse(AudioChunk, event)
            self._record(lambda rec: rec.add(chunk))
        elif AudioStop.is_type(event.type):
            recording, request = self._recording, self._request
            self._recording, self._request = Recording(self._ctx.max_audio_bytes), None
            if recording is not None:  # else its error went out already
                await self.write_event((await self._transcribe(recording, request)).event())
        return True  # other events are not for this service: ignored, as Wyoming servers do

    def _record(self, step: Callable[[Recording], None]) -> None:
        """One step of the recording; its error ends the recording (one error event, then its
        remaining chunks are dropped) but not the connection, except for RequestTooLarge."""
        if self._recording is None:
            return
        try:
            step(self._recording)
        except Hal0Error:
            self._recording = None
            raise

    async def _transcribe(self, recording: Recording, request: Transcribe | None) -> Transcript:
        language = _language(request.language if request else None)
        fields = {"response_format": "json", **({"language": language} if language else {})}
        model = self._model(request.name if request else None)
        if model:
            fields["model"] = model
        body, content_type = encode_form(fields, {"file": ("audio.wav", "audio/wav", recording.wav())})
        async with self._ctx.dispatcher.open("/v1/audio/transcriptions", model, body, content_type) as answer:
            data = await _read(answer.read(), "transcription")
        try:
            result = json.loads(data)
            text = result["text"]
        except (ValueError, KeyError, TypeError):
            raise SlotUnreachable("the transcription answer is not the JSON hal0 asked for") from None
        return Transcript(text=str(text).strip(), language=result.get("language") or language)


async def _read(pending: Any, what: str) -> Any:
    """Await a read of a backend's body; a break-off is SlotUnreachable."""
    try:
        return await pending
    except (BackendError, aiohttp.ClientError, OSError) as e:
        raise SlotUnreachable(f"the {what} broke off: {e}") from None


class TtsConnection(_Connection):
    """``synthesize`` → ``audio-start``, chunks as the engine makes them, ``audio-stop``; and the
    streaming variant: the text of ``synthesize-chunk``s is spoken sentence by sentence as it comes,
    in one audio stream, then ``synthesize-stopped``."""

    kind = Modality.SPEECH

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: Context) -> None:
        super().__init__(reader, writer, ctx)
        self._stream: SynthesizeStart | None = None  # a streamed synthesis in progress
        self._text = ""
        self._started = False  # the stream's audio-start went out

    async def handle_event(self, event: Event) -> bool:
        if await self._describe_or_select(event, self._ctx.tts_info):
            return True
        if Synthesize.is_type(event.type):
            request = _parse(Synthesize, event)
            voice = request.voice.name if request.voice else None
            # While streaming, a client sends it only for older servers: ignored.
            if self._stream is None and await self._speak(request.text, voice, start=True):
                await self.write_event(AudioStop().event())
        elif SynthesizeStart.is_type(event.type):
            self._stream, self._text, self._started = _parse(SynthesizeStart, event), "", False
        elif SynthesizeChunk.is_type(event.type) and self._stream is not None:
            text = _parse(SynthesizeChunk, event).text
            if not isinstance(text, str):
                raise RequestMalformed("synthesize-chunk text must be a string", param="text")
            self._text += text
            if len(self._text) > MAX_STREAM_TEXT:
                raise RequestTooLarge(f"over {MAX_STREAM_TEXT} characters of text without the end of a sentence")
            *sentences, self._text = _SENTENCE_END.split(self._text)
            for sentence in sentences:
                await self._speak_streamed(sentence)
        elif SynthesizeStop.is_type(event.type) and self._stream is not None:
            try:
                await self._speak_streamed(self._text)
                if self._started:
                    await self.write_event(AudioStop().event())
            finally:
                self._stream, self._text = None, ""
            await self.write_event(SynthesizeStopped().event())
        return True

    async def _speak_streamed(self, text: str) -> None:
        assert self._stream is not None
        voice = self._stream.voice.name if self._stream.voice else None
        if text.strip():
            self._started = await self._speak(text, voice, start=not self._started) or self._started

    async def _speak(self, text: str, voice: str | None, *, start: bool) -> bool:
        """Synthesize ``text`` and send its audio (after an ``audio-start`` if ``start``); whether
        any audio went out."""
        sent = False
        async with contextlib.aclosing(self._synthesize(text, voice)) as chunks:  # closed early: stop the engine
            async for chunk in chunks:
                if start and not sent:
                    await self.write_event(AudioStart(chunk.rate, chunk.width, chunk.channels, timestamp=0).event())
                await self.write_event(chunk.event())
                sent = True
        return sent

    async def _synthesize(self, text: str, voice: str | None) -> AsyncGenerator[AudioChunk, None]:
        """The audio of ``text`` from the tts slot, chunk by chunk as the engine produces it.
        OpenAI's voice names map to the engine's default voice, so no voice means that one."""
        model = self._model(None)
        body = {"input": text, "voice": voice or "alloy", "response_format": "wav",
                **({"model": model} if model else {})}
        async with self._ctx.dispatcher.open("/v1/audio/speech", model, json.dumps(body).encode(),
                                                 "application/json") as answer:
            wav = WavStream()
            pieces = answer.chunks()
            while (piece := await _read(anext(pieces, None), "speech")) is not None:
                for chunk in wav.feed(piece):
                    yield chunk
