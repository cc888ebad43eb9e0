"""Speech-to-text through `hal0 serve`, the whisper runner and the official OpenAI SDK."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving

pytestmark = [pytest.mark.backends, pytest.mark.slow]
SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d"
VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d"


def espeak(path: Path, text: str) -> Path:
    subprocess.run([manifest()["tools"]["espeak_ng"], "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    home = tmp_path_factory.mktemp("voice")
    m = manifest()
    subprocess.run([*HAL0, "init", "--provider-python", f"whisper={m['whisper']['python']}",
                    "--provider-python", f"kokoro={m['kokoro']['python']}",
                    "--slot-provider", "stt=whisper", "--slot-model", f"stt={m['whisper']['model_dir']}",
                    "--slot-provider", "tts=kokoro", "--slot-model", f"tts={m['kokoro']['model']}"],
                   env=hal0_env(home), check=True, capture_output=True)
    for name in ("primary", "embed", "img"):
        toml = home / f"etc/slots/{name}.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    for name, port in (("stt", 8083), ("tts", 8084)):
        toml = home / f"etc/slots/{name}.toml"
        text = toml.read_text().replace(f"port = {port}", f"port = {free_port()}")
        toml.write_text(text.replace("threads = 0", "threads = 2"))
    token = (home / "etc/admin.token").read_text().strip()
    with serving(home) as s:
        for name in ("stt", "tts"):
            s.load(name, token)
        yield s, token
        s.stop()


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak(tmp_path_factory.mktemp("audio") / "hello.wav", "hello world")


def test_transcription_in_every_format(client: openai.OpenAI, hello: Path) -> None:
    with hello.open("rb") as f:
        out = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert words(out.text) == ["hello", "world"]
    with hello.open("rb") as f:
        text = client.audio.transcriptions.create(model="stt", file=f, response_format="text")
    assert words(str(text)) == ["hello", "world"]
    with hello.open("rb") as f:
        srt = str(client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt"))
    assert re.fullmatch(rf"1\n{SRT_TIME}\nHello world!?\n\s*", srt), srt
    with hello.open("rb") as f:
        vtt = str(client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt"))
    assert re.fullmatch(rf"WEBVTT\n\n{VTT_TIME}\nHello world!?\n\s*", vtt), vtt
    with hello.open("rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert verbose.language == "en" and verbose.duration > 0.5
    assert verbose.segments and verbose.segments[0].end > verbose.segments[0].start


def test_the_backend_model_id_and_slot_header(hal0: tuple[Served, str], hello: Path,
                                              client: openai.OpenAI) -> None:
    with hello.open("rb") as f:
        raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=f)
    assert raw.headers["X-Hal0-Slot"] == "stt"


@pytest.mark.parametrize(("payload", "status", "code"), [
    ({"file": ("notes.txt", b"this is not audio at all", "text/plain")}, 415, "audio.unsupported_format"),
    ({"file": ("empty.wav", b"", "audio/wav")}, 400, "request.invalid"),
])
def test_bad_uploads(client: openai.OpenAI, payload: dict[str, Any], status: int, code: str, hello: Path) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.transcriptions.create(model="whisper-1", **payload)
    assert (e.value.status_code, e.value.body["code"]) == (status, code)  # type: ignore[index]
    with hello.open("rb") as f:  # the runner is still healthy
        assert words(client.audio.transcriptions.create(model="whisper-1", file=f).text) == ["hello", "world"]


def test_a_missing_file_field_is_400(hal0: tuple[Served, str]) -> None:
    s, token = hal0
    body = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b--\r\n'
    req = urllib.request.Request(s.url + "/v1/audio/transcriptions", body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400 and json.loads(e.value.read())["error"]["param"] == "file"


def test_killing_the_runner_mid_request_gives_an_error_and_a_restart(
        hal0: tuple[Served, str], client: openai.OpenAI, tmp_path: Path) -> None:
    s, _ = hal0
    admin = (s.home / "etc/admin.token").read_text().strip()
    long = espeak(tmp_path / "long.wav", "the quick brown fox jumps over the lazy dog. " * 12)
    pid = s.get("/api/slots/stt", admin)[1]["pid"]
    result: dict[str, Any] = {}

    def transcribe() -> None:
        with long.open("rb") as f:
            try:
                client.audio.transcriptions.create(model="whisper-1", file=f)
            except openai.APIStatusError as e:
                result["error"] = (e.status_code, e.body)
    worker = threading.Thread(target=transcribe)
    worker.start()
    while s.get("/api/slots/stt", admin)[1]["inflight"] == 0:
        pass  # wait until hal0 has forwarded it
    subprocess.run(["kill", "-9", str(pid)], check=True)
    worker.join(60)
    status, body = result["error"]
    assert status == 502 and body["code"] == "slot.unreachable"
    deadline = 600
    # Until the restarted runner is ready: right after the kill the slot may still read ready (old pid).
    while ((slot := s.get("/api/slots/stt", admin)[1])["state"] != "ready" or slot["pid"] == pid) and deadline:
        deadline -= 1
        threading.Event().wait(0.1)  # the restart runs in hal0; we watch it from outside
    assert slot["state"] == "ready" and slot["pid"] != pid


def test_kokoro_speech_round_trips_through_whisper(client: openai.OpenAI, tmp_path: Path) -> None:
    sentence = "The quick brown fox jumps over the lazy dog."
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=sentence, response_format="wav")
    wav = tmp_path / "fox.wav"
    wav.write_bytes(speech.content)
    assert speech.content[:4] == b"RIFF"
    with wav.open("rb") as f:
        heard = client.audio.transcriptions.create(model="whisper-1", file=f).text
    assert words(heard) == words(sentence)


@pytest.mark.parametrize(("fmt", "magic"), [("pcm", b""), ("flac", b"fLaC"), ("mp3", b""), ("opus", b"OggS")])
def test_every_format_the_machine_can_encode(client: openai.OpenAI, fmt: str, magic: bytes) -> None:
    raw = client.audio.speech.with_raw_response.create(model="tts", voice="jf_alpha", input="Hello there.",
                                                       response_format=fmt)  # type: ignore[arg-type]
    audio = raw.content
    assert raw.headers["X-Hal0-Slot"] == "tts" and len(audio) > 1000
    assert audio.startswith(magic)
    if fmt == "pcm":
        assert len(audio) % 2 == 0  # 16-bit samples
    if fmt == "mp3":
        assert audio[:3] == b"ID3" or audio[0] == 0xFF


def test_aac_needs_ffmpeg(client: openai.OpenAI) -> None:
    if shutil.which("ffmpeg"):
        assert len(client.audio.speech.create(model="tts", voice="alloy", input="Hi.", response_format="aac").content)
        return
    with pytest.raises(openai.APIStatusError) as e:
        client.audio.speech.create(model="tts", voice="alloy", input="Hi.", response_format="aac")
    assert (e.value.status_code, e.value.body["code"]) == (415, "audio.unsupported_format")  # type: ignore[index]
    assert "ffmpeg" in e.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "", "voice": "alloy"}, "input"),
    ({"input": "x" * 5000, "voice": "alloy"}, "input"),
    ({"input": "hello", "voice": "nobody"}, "voice"),
    ({"input": "hello", "voice": "alloy", "speed": 10}, "speed"),
])
def test_bad_speech_requests(client: openai.OpenAI, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", **body)
    assert e.value.body["param"] == param  # type: ignore[index]
    assert client.audio.speech.create(model="tts-1", voice="alloy", input="ok", response_format="pcm").content


def test_voices_are_listed(client: openai.OpenAI, hal0: tuple[Served, str]) -> None:
    voices = client.get("/audio/voices", cast_to=object)
    assert [v["id"] for v in voices["data"]] == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro",  # type: ignore[index]
                                                 "jm_kumo"]
    status, public = hal0[0].get("/v1/audio/voices")  # as Open WebUI asks: no token, {"voices": [{id, name}]}
    assert status == 200 and public["voices"][0] == {"id": "jf_alpha", "name": "jf_alpha"}
    assert [v["id"] for v in public["voices"]] == [v["id"] for v in voices["data"]]  # type: ignore[index]
    status, audio = hal0[0].get("/v1/audio/models")
    assert status == 200 and [m["id"] for m in audio["models"]] == ["stt", "tts", "models-whisper-base-1.0.0",
                                                                 "kokoro-v1.0.int8"]


def test_moonshine_without_weights_says_what_is_missing(hal0: tuple[Served, str], tmp_path: Path) -> None:
    """No Moonshine weights ship on PyPI: a moonshine slot must say exactly what to provide."""
    s, _ = hal0
    admin = (s.home / "etc/admin.token").read_text().strip()
    empty = tmp_path / "moonshine-base"
    empty.mkdir()
    (empty / "encoder_model.onnx").write_bytes(b"")
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
    create = urllib.request.Request(s.url + "/api/slots", json.dumps(
        {"name": "moon", "provider": "moonshine", "model": str(empty)}).encode(), headers=headers)
    urllib.request.urlopen(create, timeout=30).close()
    load = urllib.request.Request(s.url + "/api/slots/moon/load", b"{}", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(load, timeout=30)
    err = json.loads(e.value.read())["error"]
    assert (e.value.code, err["code"]) == (409, "model.files_missing")
    assert err["details"]["missing"] == ["decoder_model_merged.onnx"]
    assert "not on PyPI" in err["message"] and "hal0 model register" in err["message"]
    assert s.get("/api/slots/moon", admin)[1]["state"] == "offline"  # untouched


def test_word_timestamps_and_a_refused_stream(client: openai.OpenAI, hello: Path) -> None:
    """`timestamp_granularities[]=word` gives faster-whisper's word timings; `stream=true` is a 400,
    never an empty answer."""
    with hello.open("rb") as f:
        out = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert out.words is not None and words(" ".join(w.word for w in out.words)) == ["hello", "world"]
    assert 0 <= out.words[0].start < out.words[0].end <= out.words[1].start < out.words[1].end <= out.duration + 0.1
    with hello.open("rb") as f, pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
    assert e.value.code == "request.invalid" and e.value.param == "stream"
    with hello.open("rb") as f, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                           timestamp_granularities=["sentence"])  # type: ignore[list-item]
