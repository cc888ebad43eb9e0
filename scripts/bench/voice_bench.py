"""Added latency of hal0 per transcription and per synthesis, and real-time factors.

One `hal0 serve` runs the stt (whisper, Whisper base) and tts (Kokoro) slots; each request is
sent alternately through hal0 and straight to the slot's runner on its own port.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import serving

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs into the forest."


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def timed(url: str, body: bytes, ctype: str, token: str | None) -> tuple[float, bytes]:
    headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {token}"} if token else {})}
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, body, headers=headers), timeout=300) as r:
        data = r.read()
    return time.perf_counter() - t0, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    m = manifest()
    with tempfile.TemporaryDirectory() as d:
        home = Path(d) / "home"
        subprocess.run([*HAL0, "init", "--provider-python", f"whisper={m['whisper']['python']}",
                        "--provider-python", f"kokoro={m['kokoro']['python']}", "--slot-provider", "stt=whisper",
                        "--slot-model", f"stt={m['whisper']['model_dir']}", "--slot-provider", "tts=kokoro",
                        "--slot-model", f"tts={m['kokoro']['model']}"], env=hal0_env(home), check=True,
                       capture_output=True)
        ports = {}
        for name, port in (("stt", 8083), ("tts", 8084)):
            toml = home / f"etc/slots/{name}.toml"
            ports[name] = free_port()
            toml.write_text(toml.read_text().replace(f"port = {port}", f"port = {ports[name]}"))
        for name in ("primary", "embed", "img"):
            toml = home / f"etc/slots/{name}.toml"
            toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
        token = (home / "etc/admin.token").read_text().strip()
        with serving(home) as s:
            for name in ("stt", "tts"):
                timed(f"{s.url}/api/slots/{name}/load", b"{}", "application/json", token)
            speech = json.dumps({"model": "tts-1", "voice": "alloy", "input": SENTENCE,
                                 "response_format": "wav"}).encode()
            _, wav = timed(f"http://127.0.0.1:{ports['tts']}/v1/audio/speech", speech, "application/json", None)
            clip = Path(d) / "clip.wav"
            clip.write_bytes(wav)
            seconds = (len(wav) - 44) / 2 / 24000
            upload, ctype = multipart(clip)
            res: dict[str, list[float]] = {k: [] for k in ("stt-hal0", "stt-direct", "tts-hal0", "tts-direct")}
            for _ in range(runs):
                res["stt-direct"].append(timed(f"http://127.0.0.1:{ports['stt']}/v1/audio/transcriptions",
                                               upload, ctype, None)[0])
                res["stt-hal0"].append(timed(f"{s.url}/v1/audio/transcriptions", upload, ctype, token)[0])
                res["tts-direct"].append(timed(f"http://127.0.0.1:{ports['tts']}/v1/audio/speech", speech,
                                               "application/json", None)[0])
                res["tts-hal0"].append(timed(f"{s.url}/v1/audio/speech", speech, "application/json", token)[0])
            s.stop()
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\nclip: {seconds:.2f} s of Kokoro speech; {runs} runs each, medians")
    for kind in ("stt", "tts"):
        direct, via = med[kind + "-direct"], med[kind + "-hal0"]
        print(f"  {kind}: direct {direct * 1e3:8.1f} ms   through hal0 {via * 1e3:8.1f} ms"
              f"   added {(via - direct) * 1e3:6.1f} ms   real-time factor {via / seconds:.3f}")


if __name__ == "__main__":
    main()
