"""Memory and residency benchmarks (docs/performance.md, "Memory and residency").

``cache``: time to first token for a ~2,000-token prompt right after a reload of Gemma 3 270M on
the CPU, with the prompt cache hal0 saved at the unload and restored at the load, and without it
(the saved files removed before the load); alternating, the median of each.

``parallel``: aggregate completion tokens/s of 1, 4 and 8 concurrent chats through hal0 and
straight to the same llama-server (the slot's own port: same process, same flags), alternating
within each round; the median of the rounds. Beside it, each chat's wall time less the time the
backend reports for it (``timings``): the cost of the path, which a busy machine blurs far less
than it blurs throughput.

``startup``: ``hal0.pyz serve`` from exec to a ``/health`` answer, and client commands
(``version``, ``status``, ``slot list``) from exec to exit, each against a bare
``python3 -c pass`` measured alternately; medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.env import REPO, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving, setup_home

# Prose that tokenizes like text (not like a list of numbers), long enough for ~2,000 Gemma tokens.
_WORDS = [
    "the", "appliance", "keeps", "every", "model", "it", "serves", "in", "one", "place", "and", "answers",
    "each", "request", "with", "the", "slot", "that", "runs", "it", "while", "the", "operator", "watches",
    "memory", "and", "time", "on", "a", "small", "box", "under", "the", "desk",
]


def long_prompt(tokens: int = 2000) -> str:
    out, i = [], 0
    while len(out) < tokens * 15 // 16:
        out.append(_WORDS[i % len(_WORDS)] + ("." if i % 17 == 16 else ""))
        i += 1
    return "You are a careful assistant. " + " ".join(out) + "\nQuestion: "


def _home(tmp: Path, slot_toml: dict[str, str]) -> Path:
    home = tmp / f"home-{len(list(tmp.iterdir()))}"
    setup_home(home, manifest()["llama_server"]["bin"], manifest()["models"]["gemma3-270m"])
    toml = home / "etc/slots/primary.toml"
    text = toml.read_text()
    for key, value in slot_toml.items():
        text = re.sub(rf"^{re.escape(key)} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    toml.write_text(text)
    return home


def _post(srv: Served, token: str, path: str, body: Any, timeout: float = 600) -> dict[str, Any]:
    status, out = srv.post(path, token, body, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"{path}: {status} {out}")
    return out  # type: ignore[no-any-return]


# --- cache --------------------------------------------------------------------------------------

def bench_cache(runs: int, threads: int) -> dict[str, Any]:
    prompt = long_prompt()  # a long system prompt; each request asks its own question after it
    body = {"model": "primary", "prompt": prompt + "what does the appliance keep?", "max_tokens": 1, "temperature": 0}
    asked = {**body, "prompt": prompt + "who watches the memory?"}
    with tempfile.TemporaryDirectory() as t:
        home = _home(Path(t), {"context_size": "4096", "threads": str(threads), "parallel": "1",
                               "extra_args": '["--swa-full"]'})
        with serving(home) as srv:
            token = (home / "etc/admin.token").read_text().strip()
            srv.load("primary", token)
            cache = home / "var/slots/primary/prompt-cache"
            results: dict[str, list[float]] = {"restored": [], "cold": []}
            timings: dict[str, list[dict[str, Any]]] = {"restored": [], "cold": []}
            for i in range(runs * 2):
                mode = ("restored", "cold")[i % 2]
                _post(srv, token, "/v1/completions", body)  # the prompt is in the cache now
                _post(srv, token, "/api/slots/primary/unload", {})  # ... and saved
                if mode == "cold":
                    for f in cache.glob("*.bin"):
                        f.unlink()
                srv.load("primary", token)
                t0 = time.perf_counter()
                out = _post(srv, token, "/v1/completions", asked)
                results[mode].append(time.perf_counter() - t0)
                timings[mode].append(out["timings"])
    med = {k: statistics.median(v) for k, v in results.items()}
    return {"prompt_tokens": timings["cold"][0]["prompt_n"] + timings["cold"][0]["cache_n"],
            "ttft_s": med, "speedup": med["cold"] / med["restored"],
            "cache_n_restored": [t["cache_n"] for t in timings["restored"]],
            "prompt_n_restored": [t["prompt_n"] for t in timings["restored"]], "runs": results}


# --- parallel -----------------------------------------------------------------------------------

async def _chats(url: str, token: str, conc: int, per_worker: int, max_tokens: int,
                 residuals: list[float] | None = None) -> tuple[int, float]:
    """``conc`` clients, ``per_worker`` chats each: (completion tokens, seconds). ``residuals`` gets
    each chat's wall time less the backend's own (its ``timings``: prompt and generation)."""
    body = {"model": "primary", "messages": [{"role": "user", "content": "Tell me about memory."}],
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.7}
    headers = {"Authorization": f"Bearer {token}"}
    tokens = 0

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal tokens
        for _ in range(per_worker):
            t0 = time.perf_counter()
            async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                out = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"{url}: {r.status} {out}")
                tokens += out["usage"]["completion_tokens"]
            if residuals is not None:
                own = (out["timings"]["prompt_ms"] + out["timings"]["predicted_ms"]) / 1000
                residuals.append(time.perf_counter() - t0 - own)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(conc)))
        return tokens, time.perf_counter() - t0


def bench_parallel(rounds: int, threads: int, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as t:
        home = _home(Path(t), {"context_size": "512", "threads": str(threads), "parallel": "8"})
        with serving(home) as srv:
            token = (home / "etc/admin.token").read_text().strip()
            slot = srv.load("primary", token)
            direct = f"http://127.0.0.1:{slot['port']}"
            asyncio.run(_chats(srv.url, token, 1, 1, 8))  # warm up
            for conc in (1, 4, 8):
                rates: dict[str, list[float]] = {"hal0": [], "direct": []}
                beyond: dict[str, list[float]] = {"hal0": [], "direct": []}
                for r in range(rounds):
                    order = (("hal0", srv.url), ("direct", direct))
                    for name, url in order if r % 2 == 0 else order[::-1]:
                        n, secs = asyncio.run(_chats(url, token, conc, 2, max_tokens, beyond[name]))
                        rates[name].append(n / secs)
                med = {k: statistics.median(v) for k, v in rates.items()}
                paired = statistics.median(h / d for h, d in zip(rates["hal0"], rates["direct"], strict=True))
                # Each chat's time beyond the backend's own: what the path to it costs (median).
                extra = {k: statistics.median(v) for k, v in beyond.items()}
                out[f"c={conc}"] = {"tokens_per_s": med, "ratio": med["hal0"] / med["direct"],
                                    "paired_ratio": paired, "beyond_backend_s": extra,
                                    "added_by_hal0_s": extra["hal0"] - extra["direct"], "rounds": rates}
    return out


# --- startup ------------------------------------------------------------------------------------

def _run_s(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _serve_to_health(argv: list[str], home: Path) -> float:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([*argv, "serve", "--host", "127.0.0.1", "--port", str(port)], env=hal0_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("hal0 serve exited") from None
                time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(30)


def bench_startup(runs: int, pyz: Path) -> dict[str, Any]:
    py = sys.executable  # a real interpreter (a pyenv shim would add its own start-up to both sides)
    argv = [py, str(pyz)]
    with tempfile.TemporaryDirectory() as t:
        home = Path(t) / "home"
        setup_home(home, manifest()["llama_server"]["bin"], manifest()["models"]["tiny-chat"])
        toml = home / "etc/slots/primary.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))  # the server alone
        env = hal0_env(home)
        env.pop("PYTHONPATH")  # the zipapp, not this checkout
        bare: list[float] = []
        serve: list[float] = []
        for _ in range(runs):
            bare.append(_run_s([py, "-c", "pass"], env))
            serve.append(_serve_to_health(argv, home))
        clients: dict[str, list[float]] = {"version": [], "status": [], "slot list": []}
        port = free_port()
        proc = subprocess.Popen([*argv, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "hal0 listening on" in line:
                break
        try:
            bare_c: list[float] = []
            for _ in range(runs):
                bare_c.append(_run_s([py, "-c", "pass"], env))
                for cmd in clients:
                    clients[cmd].append(_run_s([*argv, *cmd.split()], env))
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    b, bc = statistics.median(bare), statistics.median(bare_c)
    return {"python": py, "bare_s": b, "serve_to_health_s": statistics.median(serve),
            "serve_beyond_bare_s": statistics.median(serve) - b,
            "clients": {k: {"s": statistics.median(v), "beyond_bare_s": statistics.median(v) - bc,
                            "ratio": statistics.median(v) / bc} for k, v in clients.items()},
            "bare_during_clients_s": bc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="*", choices=["cache", "parallel", "startup"], default=[])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--pyz", type=Path, default=REPO / "dist" / "hal0.pyz")
    args = p.parse_args()
    report: dict[str, Any] = {}
    for what in args.what or ["cache", "parallel", "startup"]:
        if what == "cache":
            report["cache"] = bench_cache(args.runs, args.threads)
        elif what == "parallel":
            report["parallel"] = bench_parallel(args.runs, args.threads, args.max_tokens)
        else:
            newest = max(f.stat().st_mtime for f in (REPO / "hal0").rglob("*"))
            if args.pyz == REPO / "dist" / "hal0.pyz" and (not args.pyz.exists() or args.pyz.stat().st_mtime < newest):
                subprocess.run([str(REPO / "scripts/build")], check=True)  # a zipapp of this checkout
            report["startup"] = bench_startup(max(args.runs, 5), args.pyz)
        print(json.dumps({what: report[what]}, indent=1), flush=True)


if __name__ == "__main__":
    main()
