"""Audio between Wyoming's raw PCM chunks and the WAV files hal0's /v1 audio routes speak (stdlib
``wave``). The engines decode WAV of any rate, width and channel count themselves (Whisper through
PyAV, Moonshine through libsndfile and a resampler), so what arrived is passed on as it came."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator

from wyoming.audio import AudioChunk, AudioChunkConverter, AudioFormat

from hal0.errors import AudioUnsupportedFormat, RequestMalformed, RequestTooLarge

__all__ = ["MAX_WAV_HEAD", "SAMPLES_PER_CHUNK", "Recording", "WavStream"]

MAX_WAV_HEAD = 64 * 1024  # a speech answer's WAV header (with any chunks before `data`)
SAMPLES_PER_CHUNK = 1024  # frames per audio-chunk sent (what Wyoming's own servers send)
_WIDTHS = (1, 2, 3, 4)


def _check_format(fmt: AudioFormat) -> None:
    """Raises RequestMalformed for a rate, width or channel count that is no integer,
    AudioUnsupportedFormat for one out of range."""
    for key in ("rate", "width", "channels"):
        value = getattr(fmt, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestMalformed(f"audio {key} {value!r} is not an integer", param=key)
    if not (1000 <= fmt.rate <= 384000 and fmt.width in _WIDTHS and 1 <= fmt.channels <= 8):
        raise AudioUnsupportedFormat(f"audio of {fmt.rate} Hz, {fmt.width} bytes and {fmt.channels} channels is not "
                                     "supported (rate 1000-384000 Hz, width 1-4 bytes, 1-8 channels)")


class Recording:
    """The audio of one transcription, in the format of its ``audio-start`` (or first chunk);
    later chunks in another format are converted to it. Bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self.format: AudioFormat | None = None
        self._converter: AudioChunkConverter | None = None

    def start(self, fmt: AudioFormat) -> None:
        """A new recording; raises AudioUnsupportedFormat."""
        _check_format(fmt)
        self.format = AudioFormat(fmt.rate, fmt.width, fmt.channels)
        self._converter = AudioChunkConverter(rate=fmt.rate, width=fmt.width, channels=fmt.channels)
        self._parts, self._size = [], 0

    def add(self, chunk: AudioChunk) -> None:
        """Raises AudioUnsupportedFormat, or RequestTooLarge beyond ``max_bytes``."""
        if self._converter is None:
            self.start(chunk)
        assert self._converter is not None
        if (chunk.rate, chunk.width, chunk.channels) != (self._converter.rate, self._converter.width,
                                                         self._converter.channels):
            _check_format(chunk)
            try:
                chunk = self._converter.convert(chunk)
            except Exception as e:  # audioop's errors for a format it cannot convert between
                raise AudioUnsupportedFormat(f"cannot convert the audio chunk ({e})") from None
        self._size += len(chunk.audio)
        if self._size > self._max:
            raise RequestTooLarge(f"the audio is over {self._max // (1024 * 1024)} MB; send shorter commands",
                                  limit_bytes=self._max)
        self._parts.append(chunk.audio)

    def wav(self) -> bytes:
        """What arrived, as a WAV file. Raises AudioUnsupportedFormat if nothing did."""
        if self.format is None or not self._size:
            raise AudioUnsupportedFormat("no audio arrived before audio-stop")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(self.format.channels)
            w.setsampwidth(self.format.width)
            w.setframerate(self.format.rate)
            frame = self.format.width * self.format.channels
            w.writeframes(b"".join(self._parts)[: self._size - self._size % frame])
        return buf.getvalue()


class WavStream:
    """A WAV answer as it arrives (a streamed one has no length): its format once the header is
    in, then whole frames split into Wyoming chunks."""

    def __init__(self) -> None:
        self._head = bytearray()
        self.format: AudioFormat | None = None
        self._rest = b""  # a partial frame, kept for the next piece
        self.timestamp = 0  # ms of audio sent so far

    def feed(self, data: bytes) -> Iterator[AudioChunk]:
        """The chunks ``data`` completes. Raises AudioUnsupportedFormat for a header that is not WAV."""
        if self.format is None:
            self._head += data
            try:
                f = io.BytesIO(bytes(self._head))
                with wave.open(f, "rb") as w:
                    self.format = AudioFormat(w.getframerate(), w.getsampwidth(), w.getnchannels())
                data = bytes(self._head[f.tell():])
            except (EOFError, wave.Error) as e:  # not all of the header is in yet
                if len(self._head) > MAX_WAV_HEAD or not b"RIFF".startswith(bytes(self._head[:4])):
                    raise AudioUnsupportedFormat(f"the speech answer is not WAV audio ({e})") from None
                return
        fmt, frame = self.format, self.format.width * self.format.channels
        data = self._rest + data
        whole = len(data) - len(data) % frame
        self._rest = data[whole:]
        step = SAMPLES_PER_CHUNK * frame
        for i in range(0, whole, step):
            chunk = AudioChunk(fmt.rate, fmt.width, fmt.channels, data[i:min(i + step, whole)],
                               timestamp=self.timestamp)
            self.timestamp += chunk.milliseconds
            yield chunk
