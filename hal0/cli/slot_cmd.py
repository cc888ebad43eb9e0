"""``hal0 slot ...``: a thin client of /api/slots."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from hal0.cli.output import fail, print_json, table
from hal0.client import ApiClient, ApiError
from hal0.paths import Paths

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("slot", help="list, inspect and control slots", parents=[common],
                       description="list, inspect and control slots")
    ss = s.add_subparsers(dest="slot_command", required=True, metavar="ACTION")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return ss.add_parser(name, help=help, parents=[common], description=help)  # type: ignore[no-any-return]

    add("list", "every slot with its state and model")
    for name, help in (("show", "one slot in detail"), ("unload", "stop the backend"),
                       ("restart", "stop and start with the configured model"),
                       ("enable", "allow the slot to start"), ("disable", "stop it and keep it stopped"),
                       ("delete", "remove a custom slot")):
        add(name, help).add_argument("name")
    p = add("load", "start the slot (clears an error); with --model, swap to that model")
    p.add_argument("name")
    p.add_argument("--model")
    p.add_argument("--force", action="store_true", help="load even if the model looks too large for the memory")
    p = add("swap", "load another model, live; rolls back if it fails")
    p.add_argument("name")
    p.add_argument("--model", required=True)
    p.add_argument("--force", action="store_true", help="load even if the model looks too large for the memory")
    p = add("logs", "the backend's recent output")
    p.add_argument("name")
    p.add_argument("-n", "--lines", type=int, default=100)
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p = add("create", "create a custom slot")
    p.add_argument("name")
    p.add_argument("--provider", default="llama-server")
    p.add_argument("--backend", default="cpu")
    p.add_argument("--model", help="the slot's default model (registry id or absolute path)")
    p.add_argument("--port", type=int, help="default: the first free port from 8087")
    p.add_argument("--extra-arg", action="append", default=[], dest="extra_args",
                   help="an extra backend argument (repeatable), e.g. --extra-arg=--lora")
    p.add_argument("--disabled", action="store_true")
    p.add_argument("--pinned", action="store_true", help="never unload it to make room for another slot")
    p.add_argument("--parallel", type=int, help="llama-server: chats decoded at once (its in-flight cap)")


def _memory(mem: dict[str, Any] | None) -> str | None:
    """``812 MiB`` resident, ``+ 3.1 GiB GPU`` where the driver tells; None before a measurement."""
    if not mem:
        return None

    def size(n: int) -> str:
        return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
    gpu = mem.get("gpu_bytes")
    return size(mem["rss_bytes"]) + (f" + {size(gpu)} GPU" if gpu else "")


def _print_slot(slot: dict[str, Any]) -> None:
    for key in ("name", "state", "provider", "backend", "port", "enabled", "pinned", "model", "model_configured",
                "model_default", "pid", "inflight", "message"):
        print(f"{key + ':':18} {slot.get(key) if slot.get(key) not in (None, '') else '-'}")
    print(f"{'memory:':18} {_memory(slot.get('memory')) or '-'}")
    for line in slot.get("log_tail", []):
        print(f"  | {line}")


class _Follower:
    """Prints a slot's transitions from /api/events, live, on a background thread."""

    def __init__(self, api: ApiClient, name: str) -> None:
        self._api, self._name = api, name
        self.started = time.monotonic()
        self._cond = threading.Condition()
        self._open = False
        self._latest = 0.0  # updated_at of the newest transition printed
        threading.Thread(target=self._run, daemon=True).start()
        with self._cond:
            self._cond.wait_for(lambda: self._open, timeout=10)

    def _run(self) -> None:
        try:
            for kind, data in self._api.events():
                if kind == "open":
                    self._mark(opened=True)
                elif kind == "slot.state" and data.get("slot") == self._name:
                    detail = f"  {data['message']}" if data.get("message") else ""
                    print(f"  {time.monotonic() - self.started:7.2f}s  {data['state']}{detail}", flush=True)
                    self._mark(updated_at=data.get("updated_at", 0.0))
        except ApiError:
            self._mark(opened=True)

    def _mark(self, opened: bool = False, updated_at: float = 0.0) -> None:
        with self._cond:
            self._open = self._open or opened
            self._latest = max(self._latest, updated_at)
            self._cond.notify_all()

    def catch_up(self, updated_at: float) -> None:
        """Block (briefly) until the transition stamped ``updated_at`` has been printed."""
        with self._cond:
            self._cond.wait_for(lambda: self._latest >= updated_at, timeout=5)


def _action(api: ApiClient, args: argparse.Namespace, action: str, body: dict[str, Any] | None) -> int:
    follower = _Follower(api, args.name) if action in ("swap", "load", "restart") and not args.json else None
    started = time.monotonic()
    try:
        slot = api.call("POST", f"/api/slots/{args.name}/{action}", body or {}, timeout=None)
    except ApiError as e:
        if follower is not None:
            follower.catch_up(api.call("GET", f"/api/slots/{args.name}")["updated_at"])
        return fail(e)
    if args.json:
        print_json(slot)
        return 0
    if follower is not None:
        follower.catch_up(slot["updated_at"])
    model = f" ({slot['model']})" if slot.get("model") else ""
    print(f"{slot['name']}: {slot['state']}{model} after {time.monotonic() - started:.2f}s")
    return 0


def _logs(api: ApiClient, args: argparse.Namespace) -> int:
    if not args.follow:
        for line in api.call("GET", f"/api/slots/{args.name}/logs?lines={args.lines}")["lines"]:
            print(line)
        return 0
    for kind, data in api.events(f"/api/slots/{args.name}/logs?lines={args.lines}&follow=1"):
        if kind == "log":
            print(data["line"], flush=True)
    return 0


def run(args: argparse.Namespace, paths: Paths) -> int:
    api = ApiClient(paths)
    cmd = args.slot_command
    try:
        if cmd == "list":
            slots = api.call("GET", "/api/slots")["slots"]
            if args.json:
                print_json(slots)
            else:
                table([(s["name"], s["state"], s["provider"], s["port"], "yes" if s["enabled"] else "no",
                        s["model"] or s["model_configured"], _memory(s.get("memory")),
                        "yes" if s.get("pinned") else None, s["message"][:60] or None) for s in slots],
                      ["SLOT", "STATE", "PROVIDER", "PORT", "ENABLED", "MODEL", "MEMORY", "PINNED", "MESSAGE"])
            return 0
        if cmd == "show":
            slot = api.call("GET", f"/api/slots/{args.name}")
            print_json(slot) if args.json else _print_slot(slot)
            return 0
        if cmd == "logs":
            return _logs(api, args)
        if cmd == "create":
            body: dict[str, Any] = {"name": args.name, "provider": args.provider, "backend": args.backend,
                                    "enabled": not args.disabled}
            if args.model:
                body["model"] = args.model
            if args.port:
                body["port"] = args.port
            server: dict[str, Any] = {"extra_args": args.extra_args} if args.extra_args else {}
            if args.parallel is not None:
                server["parallel"] = args.parallel
            if server:
                body["server"] = server
            if args.pinned:
                body["pinned"] = True
            slot = api.call("POST", "/api/slots", body)
            print_json(slot) if args.json else print(f"created slot {slot['name']} on port {slot['port']}")
            return 0
        if cmd == "delete":
            api.call("DELETE", f"/api/slots/{args.name}")
            print(f"deleted slot {args.name}")
            return 0
        body = {"model": getattr(args, "model", None), "force": getattr(args, "force", False) or None}
        return _action(api, args, cmd, {k: v for k, v in body.items() if v} or None)
    except ApiError as e:
        return fail(e)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
