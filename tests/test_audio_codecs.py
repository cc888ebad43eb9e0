"""Audio decoding and encoding helpers of the runners, run in an engine virtualenv (Kokoro's has
numpy and soundfile) exactly as a runner runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.helpers.env import REPO, manifest

pytestmark = pytest.mark.backends


def in_engine(code: str) -> object:
    out = subprocess.run([manifest()["kokoro"]["python"], "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_decode_reads_wav_and_flac_and_explains_the_rest(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    subprocess.run([manifest()["tools"]["espeak_ng"], "-w", str(wav), "hello"], check=True)
    flac = tmp_path / "a.flac"
    subprocess.run([manifest()["tools"]["sox"], str(wav), str(flac)], check=True)
    result = in_engine(f"""
        import json
        from pathlib import Path
        from hal0.errors import AudioUnsupportedFormat
        from hal0.runners.engines.audio import decode
        out = {{}}
        for name in ("a.wav", "a.flac"):
            samples, rate = decode(Path({str(tmp_path)!r}, name).read_bytes())
            out[name] = [len(samples) / rate, rate]
        try:
            decode(b"plain text, not audio")
        except AudioUnsupportedFormat as e:
            out["text"] = [e.status, e.message]
        print(json.dumps(out))
    """)
    assert isinstance(result, dict)
    wav_seconds, rate = result["a.wav"]
    assert rate == 22050 and 0.3 < wav_seconds < 2
    assert result["a.flac"] == result["a.wav"]
    status, message = result["text"]
    assert status == 415
    if shutil.which("ffmpeg") is None:
        assert "need ffmpeg, which is not installed (apt-get install ffmpeg)" in message.replace("needs", "need")
    else:
        assert "not audio ffmpeg can decode" in message


def test_wav_stream_header_and_pcm() -> None:
    result = in_engine("""
        import json
        import numpy as np
        from hal0.runners.engines.audio import pcm16, wav_header
        h = wav_header(24000)
        print(json.dumps([h[:4].decode(), h[8:16].decode(), len(h), len(pcm16(np.array([0.0, 1.0, -2.0])))]))
    """)
    assert result == ["RIFF", "WAVEfmt ", 44, 6]
