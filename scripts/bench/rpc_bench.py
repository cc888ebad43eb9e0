"""Tokens/s of one model on one box vs split over a ``hal0 worker`` in a second network namespace.

Box B is a network namespace joined to this one by a veth pair (10.77.250.1 <-> .2): the bytes
cross a real TCP connection and hal0's gate, but no wire, so this is a *loopback* figure (it
shows the protocol's and the gate's cost, not a LAN's latency). Each configuration runs
llama-server with the argv hal0 builds for the slot (``LlamaServer.launch``), loads the model,
then times ``--runs`` completions of ``--tokens`` tokens at temperature 0 and reports the
medians of llama-server's own timings (prompt and generation tokens/s).

Configurations: ``one box`` (every layer on this box's CPU), ``split`` (half the layers on the
worker: ``gpu_layers`` = half, ``rpc`` = the worker), ``all on worker`` (``gpu_layers = -1``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from hal0.config.schema import ModelSection, ProviderConfig, ServerSection, SlotConfig
from hal0.models.registry import Registry, resolve_model
from hal0.paths import resolve_paths
from hal0.providers.llama_server import LlamaServer
from tests.helpers.env import REPO, free_port, manifest

NS, VA, VB, A, B = "hal0bench", "h0benA", "h0benB", "10.77.250.1", "10.77.250.2"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def netns_up() -> None:
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", VA, "type", "veth", "peer", "name", VB)
    sh("ip", "link", "set", VB, "netns", NS)
    sh("ip", "addr", "add", f"{A}/24", "dev", VA)
    sh("ip", "link", "set", VA, "up")
    sh("ip", "-n", NS, "addr", "add", f"{B}/24", "dev", VB)
    sh("ip", "-n", NS, "link", "set", VB, "up")
    sh("ip", "-n", NS, "link", "set", "lo", "up")


def netns_down() -> None:
    subprocess.run(["ip", "link", "del", VA], capture_output=True)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def get(url: str, body: dict[str, object] | None = None, timeout: float = 600) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data), timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def measure(label: str, slot: SlotConfig, provider: ProviderConfig, model: Path, home: Path,
            runs: int, tokens: int) -> dict[str, float]:
    resolved = resolve_model(str(model), Registry(resolve_paths({"HAL0_HOME": str(home)})))
    spec = LlamaServer().launch(slot, resolved, provider, home)
    proc = subprocess.Popen(spec.argv, env=dict(spec.env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{slot.port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if get(url + "/health", timeout=5).get("status") == "ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{label}: llama-server exited with {proc.returncode}")
            time.sleep(0.05)
        load_s = time.perf_counter() - t0
        pp, tg = [], []
        for _ in range(runs):
            out = get(url + "/completion", {"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "seed": 1,
                                             "ignore_eos": True, "cache_prompt": False})
            timings = out["timings"]
            assert isinstance(timings, dict)
            pp.append(float(timings["prompt_per_second"]))
            tg.append(float(timings["predicted_per_second"]))
        return {"load_s": load_s, "prompt_tps": statistics.median(pp), "gen_tps": statistics.median(tg)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="threads of llama-server and of rpc-server each")
    parser.add_argument("--layers", type=int, default=18, help="the model's repeating layers (Gemma 3 270M: 18)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: the worker runs in its own network namespace (ip netns)")
    m = manifest()
    model = Path(m["models"]["gemma3-270m"])
    provider = ProviderConfig(bin=m["llama_server"]["bin"], env=m["llama_server"]["env"])
    port = free_port()
    netns_down()
    netns_up()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "etc").mkdir()
        (home / "etc/hal0.toml").write_text(f'[providers.llama-server]\nbin = "{provider.bin}"\n')
        env = {**os.environ, "HAL0_HOME": str(home), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        worker = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m", "hal0", "worker", "--host", B,
                                   "--port", str(port), "--allow", f"{A}/32", "--threads", str(args.threads)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert worker.stdout is not None
            for line in worker.stdout:
                if "hal0 worker listening on" in line:
                    break
            else:
                raise SystemExit("hal0 worker did not start")
            threading.Thread(target=worker.stdout.read, daemon=True).start()  # keep its log flowing
            server = ServerSection(threads=args.threads)
            base = SlotConfig(name="bench", port=free_port(), server=server,
                              model=ModelSection(context_size=2048))
            configs = {
                "one box": base,
                "split (half the layers on the worker)": SlotConfig(
                    name="bench", port=free_port(), server=server, rpc=(f"{B}:{port}",),
                    model=ModelSection(context_size=2048, gpu_layers=args.layers // 2)),
                "all on the worker": SlotConfig(name="bench", port=free_port(), server=server, rpc=(f"{B}:{port}",),
                                                model=ModelSection(context_size=2048, gpu_layers=-1)),
            }
            for label, slot in configs.items():
                results[label] = measure(label, slot, provider, model, home, args.runs, args.tokens)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate(timeout=60)
            netns_down()
    print(f"\nGemma 3 270M Q4_K_M, {args.tokens} tokens x {args.runs} runs, {args.threads} thread(s) per process, "
          f"loopback veth between two network namespaces on one machine (medians)")
    print(f"{'configuration':40} {'load s':>7} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for label, r in results.items():
        print(f"{label:40} {r['load_s']:7.2f} {r['prompt_tps']:13.1f} {r['gen_tps']:10.1f}")


if __name__ == "__main__":
    main()
