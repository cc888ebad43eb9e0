"""``hal0 status``."""

from __future__ import annotations

import argparse

from hal0.cli.output import fail, print_json, table
from hal0.client import ApiClient, ApiError
from hal0.paths import Paths


def run(args: argparse.Namespace, paths: Paths) -> int:
    try:
        st = ApiClient(paths).call("GET", "/api/status")
    except ApiError as e:
        return fail(e)
    if args.json:
        print_json(st)
        return 0
    print(f"hal0 {st['version']}, up {st['uptime_s']:.0f}s, {st['paths']['mode']} mode "
          f"(config {st['paths']['config_dir']})")
    rows = [(s["name"], s.get("state", "-"), s["provider"], s["backend"], s["port"],
             "yes" if s["enabled"] else "no", s.get("model") or s.get("model_default") or "-")
            for s in st["slots"]]
    table(rows, ["SLOT", "STATE", "PROVIDER", "BACKEND", "PORT", "ENABLED", "MODEL"])
    workers = [(s["name"], addr, "up" if why == "up" else "unknown" if why == "unknown" else f"down: {why}")
               for s in st["slots"] for addr, why in s.get("workers", {}).items()]
    if workers:
        print()
        table(workers, ["SLOT", "RPC WORKER", "STATE"])
    remotes = [(u["name"], u["kind"], u["url"], u["state"] + (f": {u['reason']}" if u["reason"] else ""),
                len(u["models"])) for u in st.get("upstreams", [])]
    if remotes:
        print()
        table(remotes, ["REMOTE", "KIND", "URL", "STATE", "MODELS"])
    print()
    if mem := st.get("memory"):
        for what, key in (("RAM", "ram_bytes"), ("GPU", "gpu_bytes")):
            limit = mem["budget"][key]
            print(f"{what + ':':7} {mem['held'][key] / 2**30:.2f} GiB held by slots, budget "
                  f"{f'{limit / 2**30:.2f} GiB' if limit is not None else 'none'}")
    for card, children in st.get("capabilities", {}).items():
        parts = [f"{child} {c['state'] if c['enabled'] else 'disabled' if c['exists'] else 'off'}"
                 for child, c in children.items()]
        print(f"{card + ':':7} {', '.join(parts) or '-'}")
    wy = st.get("wyoming")
    if wy and wy["enabled"]:
        where = wy["message"]
        if wy["state"] == "listening":
            where = f"speech-to-text {wy['stt']}, text-to-speech {wy['tts']}"
        print(f"wyoming: {wy['state']}: {where}")
    return 0
