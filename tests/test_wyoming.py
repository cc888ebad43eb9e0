"""hal0's Wyoming server, driven by the `wyoming` library's own async TCP client against a real
`hal0 serve` with the real Whisper and Kokoro runners."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import subprocess
import tomllib
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info, SelectProgram
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from hal0.config import load_config
from hal0.errors import ConfigInvalid
from hal0.paths import Paths
from hal0.wyoming.service import MAX_CONNECTIONS, allowed
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving

HOST = "127.0.0.1"
pytestmark = [pytest.mark.backends, pytest.mark.slow]
READ_TIMEOUT = 120.0  # a first request may wake a slot


class WyomingError(Exception):
    """An ``error`` event where the test expected an answer."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.text}")
        self.error = error


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


# --- configuration and the allow-list, without a server ------------------------------------


@pytest.mark.parametrize(("table", "key"), [
    ({"host": "example.lan"}, "wyoming.host"),
    ({"allow": ["10.0.0.0/33"]}, "wyoming.allow[0]"),
    ({"allow": ["192.168.1.0/24", "everyone"]}, "wyoming.allow[1]"),
    ({"stt_port": 0}, "wyoming.stt_port"),
    ({"stt_port": 10300, "tts_port": 10300}, "wyoming.tts_port"),
    ({"allow": "10.0.0.0/8"}, "wyoming.allow"),
    ({"enabled": "yes"}, "wyoming.enabled"),
    ({"idle_timeout_s": 0}, "wyoming.idle_timeout_s"),
])
def test_an_invalid_wyoming_table_names_the_key(paths: Paths, table: dict[str, Any], key: str) -> None:
    paths.config_dir.mkdir(parents=True)
    paths.hal0_toml.write_text(tomli_w.dumps({"wyoming": table}))
    with pytest.raises(ConfigInvalid) as e:
        load_config(paths)
    assert e.value.code == "config.invalid"
    assert e.value.details["key"] == key


def test_the_defaults_are_off_on_loopback_on_the_usual_ports(paths: Paths) -> None:
    wy = load_config(paths).wyoming
    assert (wy.enabled, wy.host, wy.stt_port, wy.tts_port, wy.allow, wy.idle_timeout_s) == (
        False, "127.0.0.1", 10300, 10200, (), 300.0)


def test_who_may_connect() -> None:
    nets = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert allowed("127.0.0.1", ()) and allowed("::1", ()) and not allowed("192.168.1.5", ())
    assert allowed("10.1.2.3", nets) and allowed("::ffff:10.1.2.3", nets) and allowed("fd00::5", nets)
    assert not allowed("127.0.0.1", nets) and not allowed("11.0.0.1", nets) and not allowed("", nets)


# --- a real hal0 with Whisper and Kokoro ---------------------------------------------------


def init_home(home: Path, wyoming: dict[str, Any], *, voice: bool) -> None:
    """``hal0 init`` with the real Whisper and Kokoro in stt and tts (enabled only with ``voice``),
    every other slot disabled, free ports, and ``[wyoming]`` set to ``wyoming``."""
    m = manifest()
    subprocess.run([*HAL0, "init", "--provider-python", f"whisper={m['whisper']['python']}",
                    "--provider-python", f"kokoro={m['kokoro']['python']}",
                    "--slot-provider", "stt=whisper", "--slot-model", f"stt={m['whisper']['model_dir']}",
                    "--slot-provider", "tts=kokoro", "--slot-model", f"tts={m['kokoro']['model']}"],
                   env=hal0_env(home), check=True, capture_output=True)
    for name in ("primary", "embed", "img", "stt", "tts"):
        toml = home / f"etc/slots/{name}.toml"
        data = tomllib.loads(toml.read_text())
        data["port"] = free_port()
        data["enabled"] = voice and name in ("stt", "tts")
        data.setdefault("server", {})["threads"] = 2
        toml.write_text(tomli_w.dumps(data))
    cfg = home / "etc/hal0.toml"
    data = tomllib.loads(cfg.read_text())
    data["wyoming"] = {**data.get("wyoming", {}), **wyoming}
    cfg.write_text(tomli_w.dumps(data))


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str, int, int]]:
    home = tmp_path_factory.mktemp("wyoming")
    stt_port, tts_port = free_port(), free_port()
    init_home(home, {"enabled": True, "host": HOST, "stt_port": stt_port, "tts_port": tts_port}, voice=True)
    token = (home / "etc/admin.token").read_text().strip()
    with serving(home) as s:
        for name in ("stt", "tts"):
            s.load(name, token)
        yield s, token, stt_port, tts_port
        s.stop()


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[AsyncTcpClient]:
    async with AsyncTcpClient(HOST, port, connect_timeout=10, read_timeout=READ_TIMEOUT) as client:
        yield client


async def describe(port: int) -> Info:
    async with connect(port) as client:
        await client.write_event(Describe().event())
        event = await client.read_event()
    assert event is not None and Info.is_type(event.type), event
    return Info.from_event(event)


async def collect_audio(client: AsyncTcpClient, until: str) -> tuple[AudioStart, bytes, list[str]]:
    """Read a synthesis answer up to the event of type ``until``: its format, audio and event types."""
    start: AudioStart | None = None
    audio, types = bytearray(), []
    while True:
        event = await client.read_event()
        assert event is not None, "the connection closed before the audio ended"
        types.append(event.type)
        if Error.is_type(event.type):
            raise WyomingError(Error.from_event(event))
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            assert start is not None and (chunk.rate, chunk.width, chunk.channels) == (start.rate, start.width,
                                                                                       start.channels)
            audio += chunk.audio
        if event.type == until:
            assert start is not None
            return start, bytes(audio), types


async def synthesize(port: int, text: str, voice: str | None = None,
                     program: str | None = None) -> tuple[AudioStart, bytes]:
    async with connect(port) as client:
        if program:
            await client.write_event(SelectProgram(name=program).event())
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        start, audio, types = await collect_audio(client, "audio-stop")
    assert types[0] == "audio-start" and types[-1] == "audio-stop" and len(types) > 3  # streamed in chunks
    return start, audio


async def transcribe(port: int, fmt: AudioStart, audio: bytes, language: str | None = "en",
                     name: str | None = None) -> Transcript:
    async with connect(port) as client:
        await client.write_event(Transcribe(name=name, language=language).event())
        await client.write_event(fmt.event())
        step = 2048 * fmt.width * fmt.channels
        for i in range(0, len(audio), step):
            await client.write_event(AudioChunk(fmt.rate, fmt.width, fmt.channels, audio[i:i + step]).event())
        await client.write_event(AudioStop().event())
        event = await client.read_event()
    assert event is not None
    if Error.is_type(event.type):
        raise WyomingError(Error.from_event(event))
    assert Transcript.is_type(event.type), event
    return Transcript.from_event(event)


async def test_describe_lists_each_service_on_its_port(voice: tuple[Served, str, int, int]) -> None:
    _, _, stt_port, tts_port = voice
    stt, tts = await describe(stt_port), await describe(tts_port)
    assert [p.name for p in stt.asr] == ["stt"] and not stt.tts
    program = stt.asr[0]
    assert program.installed and program.attribution.url == "https://github.com/SYSTRAN/faster-whisper"
    assert len(program.models) == 1 and program.models[0].installed
    assert {"en", "de", "ja"} <= set(program.models[0].languages)
    assert [p.name for p in tts.tts] == ["tts"] and not tts.asr
    kokoro = tts.tts[0]
    assert kokoro.installed and kokoro.supports_synthesize_streaming
    assert sorted(v.name for v in kokoro.voices) == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro",
                                                     "jm_kumo"]
    assert all(v.installed and v.languages == ["en"] for v in kokoro.voices)
    assert kokoro.voices[0].attribution.url == "https://huggingface.co/hexgrad/Kokoro-82M"


async def test_speech_round_trips_through_both_services(voice: tuple[Served, str, int, int]) -> None:
    _, _, stt_port, tts_port = voice
    fmt, audio = await synthesize(tts_port, "Hello world.", program="tts")
    assert (fmt.rate, fmt.width, fmt.channels) == (24000, 2, 1) and len(audio) > 24000  # over half a second
    model = (await describe(stt_port)).asr[0].models[0].name  # what Home Assistant sends back
    heard = await transcribe(stt_port, fmt, audio, name=model)
    assert words(heard.text) == ["hello", "world"] and heard.language == "en"


async def test_any_rate_width_and_channels_are_transcribed(voice: tuple[Served, str, int, int],
                                                            tmp_path: Path) -> None:
    """espeak's 22050 Hz mono, and the same as 44.1 kHz stereo 32-bit, 16 kHz 16-bit and 16 kHz 8-bit
    (unsigned, as in WAV: coarse, but Whisper still hears its first word)."""
    _, _, stt_port, _ = voice
    wav = tmp_path / "hello.wav"
    await asyncio.to_thread(subprocess.run, [manifest()["tools"]["espeak_ng"], "-w", str(wav), "hello world"],
                            check=True)
    with wave.open(str(wav), "rb") as w:
        fmt = AudioStart(w.getframerate(), w.getsampwidth(), w.getnchannels())
        pcm = w.readframes(w.getnframes())
    assert words((await transcribe(stt_port, fmt, pcm, language="en-US")).text) == ["hello", "world"]
    for rate, width, channels in ((44100, 4, 2), (16000, 2, 1), (16000, 1, 1)):
        chunk = AudioChunk(fmt.rate, fmt.width, fmt.channels, pcm)
        other = AudioChunkConverter(rate=rate, width=width, channels=channels).convert(chunk)
        heard = words((await transcribe(stt_port, AudioStart(rate, width, channels), other.audio, language=None)).text)
        assert heard == ["hello", "world"] or (width == 1 and heard[0] == "hello"), (rate, width, channels, heard)


async def test_streamed_text_is_spoken_sentence_by_sentence(voice: tuple[Served, str, int, int]) -> None:
    _, _, stt_port, tts_port = voice
    async with connect(tts_port) as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="jf_alpha")).event())
        for part in ("Hello", " world. Good", "bye now."):
            await client.write_event(SynthesizeChunk(text=part).event())
        await client.write_event(Synthesize(text="Hello world. Goodbye now.").event())  # for older servers: ignored
        await client.write_event(SynthesizeStop().event())
        fmt, audio, types = await collect_audio(client, "synthesize-stopped")
    assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"]
    assert types.count("audio-start") == 1 and types.count("audio-stop") == 1
    heard = await transcribe(stt_port, fmt, audio)
    assert words(heard.text)[:2] == ["hello", "world"] and "goodbye" in "".join(words(heard.text)[2:])


async def test_two_clients_at_once(voice: tuple[Served, str, int, int]) -> None:
    _, _, stt_port, tts_port = voice
    (fmt_a, audio_a), (fmt_b, audio_b) = await asyncio.gather(synthesize(tts_port, "Hello world."),
                                                              synthesize(tts_port, "Good morning.", "jm_kumo"))
    a, b = await asyncio.gather(transcribe(stt_port, fmt_a, audio_a), transcribe(stt_port, fmt_b, audio_b))
    assert words(a.text) == ["hello", "world"] and words(b.text) == ["good", "morning"]


async def test_errors_come_back_as_error_events_and_the_connection_stays(
        voice: tuple[Served, str, int, int]) -> None:
    _, _, stt_port, tts_port = voice
    async with connect(tts_port) as client:
        await client.write_event(Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event())
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type)
        err = Error.from_event(event)
        assert err.code == "request.invalid" and "unknown voice 'nobody'" in err.text and "jf_alpha" in err.text
        await client.write_event(Describe().event())
        event = await client.read_event()
        assert event is not None and Info.is_type(event.type)
    async with connect(stt_port) as client:
        await client.write_event(Transcribe(language="not a language!").event())
        await client.write_event(AudioStop().event())
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type), event
        assert Error.from_event(event) == Error("'not a language!' is not a language code", "request.invalid")
        await client.write_event(AudioStop().event())  # nothing recorded
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type), event
        assert Error.from_event(event) == Error("no audio arrived before audio-stop", "audio.unsupported_format")
        await client.write_event(AudioStart(8, 2, 1).event())  # 8 Hz
        event = await client.read_event()
        assert event is not None and Error.is_type(event.type), event
        assert Error.from_event(event).code == "audio.unsupported_format"
        await client.write_event(Describe().event())
        event = await client.read_event()
        assert event is not None and Info.is_type(event.type)


async def raw_exchange(port: int, data: bytes) -> list[Event]:
    """Send raw bytes; the events that come back until hal0 closes the connection (a reset
    counts: hal0 closes without reading what it refuses)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    events = []
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(30):
            while (event := await async_read_event(reader)) is not None:
                events.append(event)
            assert await reader.read() == b""  # closed by hal0
        return events
    except ConnectionResetError:
        return events
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.parametrize("data", [
    b"this is not json\n",
    b'["a list", "not an event"]\n',
    b'{"type": "audio-chunk", "data": {"rate": 16000}, "payload_length": 1000000000}\n',
    b'{"type": "describe", "data_length": "many"}\n',
    b'{"type": "describe"' + b" " * 70000 + b"}\n",
    b'{"type": "audio-chunk", "data": {"rate": "fast", "width": 2, "channels": 1}, "payload_length": 2}\nxx',
])
async def test_a_malformed_or_oversized_event_closes_only_its_connection(
        voice: tuple[Served, str, int, int], data: bytes) -> None:
    _, _, stt_port, _ = voice
    async with connect(stt_port) as bystander:  # connected before, kept through
        events = await raw_exchange(stt_port, data)
        assert [e.type for e in events] == ["error"]
        assert events[0].data["code"] == "request.malformed_json"
        await bystander.write_event(Describe().event())
        event = await bystander.read_event()
        assert event is not None and Info.is_type(event.type)


async def test_status_card_and_cli_show_the_listeners(voice: tuple[Served, str, int, int]) -> None:
    served, token, stt_port, tts_port = voice
    status, body = served.get("/api/status", token)
    assert status == 200
    assert body["wyoming"] | {"connections": 0} == {
        "enabled": True, "state": "listening", "message": "", "host": HOST, "stt": f"tcp://{HOST}:{stt_port}",
        "tts": f"tcp://{HOST}:{tts_port}", "stt_port": stt_port, "tts_port": tts_port, "allow": [],
        "connections": 0}
    card = body["capabilities"]["voice"]
    assert card["stt"]["wyoming"] == f"tcp://{HOST}:{stt_port}"
    assert card["tts"]["wyoming"] == f"tcp://{HOST}:{tts_port}"
    out = await asyncio.to_thread(subprocess.run, [*HAL0, "status"], env=hal0_env(served.home), capture_output=True,
                                  text=True, check=True)
    assert (f"wyoming: listening: speech-to-text tcp://{HOST}:{stt_port}, "
            f"text-to-speech tcp://{HOST}:{tts_port}") in out.stdout


async def test_describe_follows_the_slots(voice: tuple[Served, str, int, int]) -> None:
    """A disabled slot's program is not installed; it keeps the voices its model had."""
    served, token, _, tts_port = voice
    assert len((await describe(tts_port)).tts[0].voices) == 5
    assert (await asyncio.to_thread(served.post, "/api/slots/tts/disable", token, {}))[0] == 200
    try:
        program = (await describe(tts_port)).tts[0]
        assert not program.installed and len(program.voices) == 5  # the voices its model had
    finally:
        assert (await asyncio.to_thread(served.post, "/api/slots/tts/enable", token, {}))[0] == 200
        await asyncio.to_thread(served.load, "tts", token)
    assert (await describe(tts_port)).tts[0].installed


async def test_an_engine_that_dies_mid_speech_gives_an_error_event(voice: tuple[Served, str, int, int]) -> None:
    """The runner is killed after its first audio went out: the client gets an error event, not
    a hang, and its connection still answers."""
    served, token, _, tts_port = voice
    pid = served.get("/api/slots/tts", token)[1]["pid"]
    async with connect(tts_port) as client:
        await client.write_event(Synthesize(text="The quick brown fox jumps over the lazy dog. " * 20).event())
        first = await client.read_event()
        assert first is not None and AudioStart.is_type(first.type)
        await asyncio.to_thread(subprocess.run, ["kill", "-9", str(pid)], check=True)
        while (event := await client.read_event()) is not None and AudioChunk.is_type(event.type):
            pass
        assert event is not None and Error.is_type(event.type), event
        assert Error.from_event(event).code == "slot.unreachable"
        await client.write_event(Describe().event())
        event = await client.read_event()
        assert event is not None and Info.is_type(event.type)
    await asyncio.to_thread(served.load, "tts", token)  # restarted (a load waits for it)


# --- who may connect, with a hal0 that runs no backend --------------------------------------


@contextlib.contextmanager
def served_with(tmp_path: Path, **wyoming: Any) -> Iterator[tuple[Served, int]]:
    stt_port = free_port()
    init_home(tmp_path, {"enabled": True, "stt_port": stt_port, "tts_port": free_port(), **wyoming}, voice=False)
    with serving(tmp_path) as s:
        yield s, stt_port
        s.stop()


async def test_a_client_outside_allow_is_refused(tmp_path: Path) -> None:
    with served_with(tmp_path, host=HOST, allow=["10.0.0.0/8"]) as (s, port):
        assert await raw_exchange(port, b'{"type": "describe"}\n') == []  # closed, unanswered
        s.stop()
        assert any("refused 127.0.0.1 (not in [wyoming].allow)" in line for line in s.log)


async def test_a_client_inside_allow_is_served(tmp_path: Path) -> None:
    """... and a disabled slot answers as over HTTP: an error event with its code."""
    with served_with(tmp_path, host=HOST, allow=["192.168.0.0/16", "127.0.0.0/8"]) as (s, port):
        info = await describe(port)
        assert [p.name for p in info.asr] == ["stt"] and not info.asr[0].installed  # the stt slot is disabled
        with pytest.raises(WyomingError) as e:
            await transcribe(port, AudioStart(16000, 2, 1), bytes(3200))
        assert e.value.error.code == "slot.disabled" and "stt" in e.value.error.text
        async with contextlib.AsyncExitStack() as stack:  # at most MAX_CONNECTIONS at once
            clients = []
            for _ in range(MAX_CONNECTIONS):
                clients.append(client := await stack.enter_async_context(connect(port)))
                await client.write_event(Describe().event())  # answered: hal0 counts this connection
                event = await client.read_event()
                assert event is not None and Info.is_type(event.type)
            assert await raw_exchange(port, b'{"type": "describe"}\n') == []  # closed, unanswered
            # hal0 stops while clients are connected: it ends their connections and exits cleanly
            assert await asyncio.to_thread(s.stop) == 0
            for client in clients:
                assert await client.read_event() is None
    assert any(f"{MAX_CONNECTIONS} connections are open already" in line for line in s.log)


async def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    with served_with(tmp_path, host=HOST, idle_timeout_s=0.5) as (s, port):
        async with connect(port) as client:
            await client.write_event(Describe().event())
            event = await client.read_event()
            assert event is not None and Info.is_type(event.type)
            assert await client.read_event() is None  # then nothing: hal0 closes it
        s.stop()
    assert any("closing a Wyoming connection: no event for 0.5 s" in line for line in s.log)


async def test_a_public_host_without_allow_is_refused_loudly(tmp_path: Path) -> None:
    with served_with(tmp_path, host="0.0.0.0") as (s, port):
        token = (tmp_path / "etc/admin.token").read_text().strip()
        status, body = s.get("/api/status", token)
        assert status == 200 and body["wyoming"]["state"] == "refused"
        assert body["wyoming"]["stt"] is None and "[wyoming].allow is empty" in body["wyoming"]["message"]
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)
        s.stop()
    assert any("WYOMING REFUSED" in line and "host 0.0.0.0 is not a loopback address" in line for line in s.log)


async def test_off_by_default(tmp_path: Path) -> None:
    with served_with(tmp_path, enabled=False) as (s, port):
        token = (tmp_path / "etc/admin.token").read_text().strip()
        _, body = s.get("/api/status", token)
        assert body["wyoming"]["state"] == "off" and body["capabilities"]["voice"]["stt"]["wyoming"] is None
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)
