"""hal0's proxy overhead against direct calls, a minimal aiohttp proxy and nginx.

Every target fronts the synthetic backend (synthetic_backend.py; hal0 the instance it runs as
its slot's backend, the others one shared instance). The load generator
is a separate process speaking raw HTTP/1.1 over keep-alive connections. Rounds alternate the
targets; the report gives medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM_BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}],
                          "stream": True}).encode()


# --- load generator (runs in its own process) ------------------------------------

async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               req: bytes) -> tuple[float, float, int, bool]:
    """Send one request; (total s, first body byte s, SSE data events, ended with [DONE])."""
    t0 = time.perf_counter()
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    first = time.perf_counter() - t0
    headers = head.decode("latin-1").lower()
    if "transfer-encoding: chunked" in headers:
        events, last = 0, b""
        got_first = False
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if not got_first:
                first, got_first = time.perf_counter() - t0, True
            if size == 0:
                break
            events += data.count(b"data: ")
            last = data
        return time.perf_counter() - t0, first, events, b"[DONE]" in last
    length = int(headers.split("content-length: ")[1].split("\r\n")[0])
    await reader.readexactly(length)
    return time.perf_counter() - t0, first, 0, True


def _request(port: int, body: bytes, token: str) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _worker(port: int, req: bytes, stop: float, count: int, out: list[tuple[float, float, int, bool]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (count and len(out) < count) or (not count and time.perf_counter() < stop):
            out.append(await _one(reader, writer, req))
    finally:
        writer.close()


async def _load(port: int, token: str, concurrency: int, stream: bool, count: int, seconds: float) -> dict[str, Any]:
    req = _request(port, STREAM_BODY if stream else BODY, token)
    out: list[tuple[float, float, int, bool]] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_worker(port, req, t0 + seconds, count, out) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat = sorted(o[0] for o in out)
    return {"n": len(out), "elapsed": elapsed, "rps": len(out) / elapsed,
            "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "ttfc": statistics.median(o[1] for o in out), "events": sum(o[2] for o in out),
            "truncated": sum(not o[3] for o in out) if stream else 0}


def loadgen(args: list[str]) -> None:
    port, token, conc, stream, count, seconds = json.loads(args[0])
    print(json.dumps(asyncio.run(_load(port, token, conc, stream, count, seconds))))


# --- targets -----------------------------------------------------------------------

def _free_port() -> int:
    sys.path.insert(0, str(REPO))
    from tests.helpers.env import free_port
    return free_port()


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Targets:
    def __init__(self, tmp: Path, access_log: bool) -> None:
        self.tmp, self.procs, self.access_log = tmp, [], access_log
        self.ports: dict[str, int] = {}
        self.tokens: dict[str, str] = {}
        self.pids: dict[str, int] = {}

    def spawn(self, argv: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{port}.log").open("wb") as log:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        _wait_port(port, proc)
        return proc

    def start(self, metrics_only: bool = False) -> None:
        """Every target; ``metrics_only``: just hal0 with metrics on and off."""
        backend = _free_port()
        self.spawn([sys.executable, str(HERE / "synthetic_backend.py"), "--port", str(backend)], backend)
        if metrics_only:
            self.start_hal0("hal0", metrics=True)
            self.start_hal0("hal0-nometrics", metrics=False)
            return
        self.ports["direct"] = backend
        port = _free_port()
        self.spawn([sys.executable, str(HERE / "minimal_proxy.py"), "--port", str(port), "--upstream",
                    f"http://127.0.0.1:{backend}"], port)
        self.ports["aiohttp-min"] = port
        if shutil.which("nginx"):
            port = _free_port()
            conf = self.tmp / "nginx.conf"
            conf.write_text(f"""worker_processes 1; daemon off; pid {self.tmp}/nginx.pid; error_log {self.tmp}/ng.log;
events {{ worker_connections 4096; }}
http {{ access_log off; upstream b {{ server 127.0.0.1:{backend}; keepalive 128; }}
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://b; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; }} }} }}""")
            self.spawn(["nginx", "-c", str(conf), "-p", str(self.tmp)], port)
            self.ports["nginx"] = port
        self.start_hal0("hal0", metrics=True)
        self.start_hal0("hal0-nometrics", metrics=False)

    def start_hal0(self, name: str, *, metrics: bool) -> None:
        """One hal0 with its own bench slot; ``metrics``: [metrics] enabled (the default)."""
        home = self.tmp / name
        env = {"HAL0_HOME": str(home), "PYTHONPATH": str(REPO)}
        wrapper = self.tmp / "synthetic-llama-server"
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'synthetic_backend.py'} \"$@\"\n")
        wrapper.chmod(0o755)
        model = self.tmp / "bench.gguf"
        model.write_bytes(b"GGUF")
        subprocess.run([sys.executable, "-m", "hal0", "init", "--provider-bin", f"llama-server={wrapper}"],
                       env={**os.environ, **env}, check=True, capture_output=True)
        cfg = home / "etc/hal0.toml"
        if not self.access_log:
            cfg.write_text(cfg.read_text().replace("access_log = true", "access_log = false"))
        if not metrics:
            text = cfg.read_text()
            assert "[metrics]\nenabled = true" in text
            cfg.write_text(text.replace("[metrics]\nenabled = true", "[metrics]\nenabled = false"))
        for builtin in ("primary", "embed", "stt", "tts", "img"):
            toml = home / f"etc/slots/{builtin}.toml"
            toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
        (home / "etc/slots/bench.toml").write_text(
            f'name = "bench"\nport = {_free_port()}\nbackend = "cpu"\nmax_inflight = 256\nmax_queue = 256\n'
            f'idle_timeout_s = 0.0\n[model]\ndefault = "{model}"\n')
        self.tokens[name] = (home / "etc/admin.token").read_text().strip()
        port = _free_port()
        proc = self.spawn([sys.executable, "-m", "hal0", "serve", "--host", "127.0.0.1", "--port", str(port)],
                          port, env)
        self.ports[name] = port
        self.pids[name] = proc.pid
        # wait for the bench slot (autostarted) to be dispatchable: one request through
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if run_load(port, self.tokens[name], 1, False, 1, 0)["n"] == 1:
                return
        raise RuntimeError("hal0's bench slot did not come up")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            proc.wait(30)


def run_load(port: int, token: str, conc: int, stream: bool, count: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--loadgen", json.dumps([port, token, conc, stream, count,
                                                                             seconds])],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"load generator failed against port {port}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


SCENARIOS = [  # name, concurrency, stream, count, seconds
    ("latency c=1", 1, False, 2000, 0),
    ("json c=16", 16, False, 0, 3),
    ("json c=64", 64, False, 0, 3),
    ("stream c=1", 1, True, 100, 0),
    ("stream c=16", 16, True, 0, 3),
]


def main() -> None:
    if sys.argv[1:2] == ["--loadgen"]:
        loadgen(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--access-log", action="store_true", help="keep hal0's access log on (off by default "
                        "here: it is the one per-request cost that is not routing, auth or accounting)")
    parser.add_argument("--metrics-only", action="store_true", help="only hal0 with [metrics] on and off, "
                        "alternating which goes first, for a steadier ratio on a busy machine")
    args = parser.parse_args()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # (scenario, hal0 target) -> CPU s per request or chunk
    with tempfile.TemporaryDirectory() as d:
        targets = Targets(Path(d), args.access_log)
        try:
            targets.start(args.metrics_only)
            for i in range(args.rounds):
                for scen, conc, stream, count, seconds in SCENARIOS:
                    order = list(targets.ports.items())
                    for name, port in order if not args.metrics_only or i % 2 == 0 else order[::-1]:
                        pid = targets.pids.get(name)
                        cpu0 = cpu_seconds(pid) if pid else 0.0
                        r = run_load(port, targets.tokens.get(name, ""), conc, stream, count, seconds)
                        if pid:
                            units = r["events"] if stream else r["n"]
                            cpu.setdefault((scen, name), []).append((cpu_seconds(pid) - cpu0) / units)
                        results.setdefault((scen, name), []).append(r)
            rss = {name: rss_mib(pid) for name, pid in targets.pids.items()}
        finally:
            targets.stop()
    if not args.metrics_only:
        report(results, cpu, rss, list(targets.ports))
    report_metrics(results, cpu, rss)


def _med(results: dict[tuple[str, str], list[dict[str, Any]]], scen: str, name: str, key: str) -> float:
    return statistics.median(r[key] for r in results[(scen, name)])


def report(results: dict[tuple[str, str], list[dict[str, Any]]], cpu: dict[tuple[str, str], list[float]],
           rss: dict[str, float], names: list[str]) -> None:
    def med(scen: str, name: str, key: str) -> float:
        return _med(results, scen, name, key)

    print(f"\n{'scenario':14} {'target':12} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'TTFC ms':>8} "
          f"{'chunks/s':>10} {'vs direct':>10} {'truncated':>9}")
    for scen, _, stream, _, _ in SCENARIOS:
        for name in names:
            p50, p99, rps = med(scen, name, "p50") * 1e3, med(scen, name, "p99") * 1e3, med(scen, name, "rps")
            ttfc = med(scen, name, "ttfc") * 1e3
            cps = statistics.median(r["events"] / r["elapsed"] for r in results[(scen, name)])
            base = med(scen, "direct", "rps")
            trunc = sum(r["truncated"] for r in results[(scen, name)])
            print(f"{scen:14} {name:12} {p50:8.3f} {p99:8.3f} {rps:9.0f} {ttfc:8.3f} "
                  f"{cps if stream else 0:10.0f} {rps / base:9.2f}x {trunc:9d}")
    print()
    for scen in ("latency c=1",):
        for name in names[1:]:
            print(f"added p50 at c=1, {name:12}: {(med(scen, name, 'p50') - med(scen, 'direct', 'p50')) * 1e3:.3f} ms"
                  f"   p99: {(med(scen, name, 'p99') - med(scen, 'direct', 'p99')) * 1e3:.3f} ms")
    for scen in ("json c=16", "json c=64"):
        print(f"hal0 / minimal aiohttp throughput, {scen}: "
              f"{med(scen, 'hal0', 'rps') / med(scen, 'aiohttp-min', 'rps'):.2f}x")
    for scen in ("stream c=1", "stream c=16"):
        base = med(scen, "direct", "ttfc")
        print(f"added TTFC at {scen}: " + ", ".join(
            f"{name} {(med(scen, name, 'ttfc') - base) * 1e3:.3f} ms" for name in names[1:]))


def report_metrics(results: dict[tuple[str, str], list[dict[str, Any]]], cpu: dict[tuple[str, str], list[float]],
                   rss: dict[str, float]) -> None:
    """hal0 with [metrics] on against off: medians, and the median of each round's own ratio."""
    on, off = "hal0", "hal0-nometrics"
    for name in (on, off):
        print(f"{name} CPU per request (json c=16): {statistics.median(cpu['json c=16', name]) * 1e6:.0f} us; "
              f"per streamed chunk (stream c=16): {statistics.median(cpu['stream c=16', name]) * 1e6:.1f} us; "
              f"RSS after the load: {rss[name]:.1f} MiB")
    print(f"\nmetrics on / off (goal: within 5 %); medians, then the median of the per-round ratios\n"
          f"{'scenario':14} {'p50 ms on':>10} {'p50 ms off':>10} {'req/s on':>9} {'req/s off':>9} "
          f"{'req/s on/off':>12} {'CPU on/off':>10} {'p50 on/off':>10}")
    for scen, *_ in SCENARIOS:
        def paired(values: dict[str, list[float]]) -> float:
            return statistics.median(a / b for a, b in zip(values[on], values[off], strict=True))
        rps = {n: [r["rps"] for r in results[(scen, n)]] for n in (on, off)}
        p50 = {n: [r["p50"] for r in results[(scen, n)]] for n in (on, off)}
        print(f"{scen:14} {_med(results, scen, on, 'p50') * 1e3:10.3f} {_med(results, scen, off, 'p50') * 1e3:10.3f} "
              f"{_med(results, scen, on, 'rps'):9.0f} {_med(results, scen, off, 'rps'):9.0f} "
              f"{paired(rps):11.3f}x {paired({n: cpu[scen, n] for n in (on, off)}):9.3f}x {paired(p50):9.3f}x")


if __name__ == "__main__":
    main()
