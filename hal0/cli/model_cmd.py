"""``hal0 model ...``: the registry, through /api/models."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hal0.cli.output import fail, print_json, table
from hal0.client import ApiClient, ApiError
from hal0.errors import Hal0Error
from hal0.paths import Paths

__all__ = ["add_parser", "pull_here", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    m = sub.add_parser("model", help="the models hal0 knows", parents=[common],
                       description="the models hal0 knows")
    ms = m.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    ms.add_parser("list", help="registered models", parents=[common])
    p = ms.add_parser("show", help="one model", parents=[common])
    p.add_argument("id")
    p = ms.add_parser("register", help="register a model file already on disk", parents=[common])
    p.add_argument("id")
    p.add_argument("path")
    p.add_argument("--capability", action="append", default=[], dest="capabilities",
                   help="chat, embed, rerank, stt, tts, image or vision (repeatable)")
    p.add_argument("--outside-roots", action="store_true",
                   help="the path is outside the model folders ([models].roots): register it anyway")
    p = ms.add_parser("pull", help="download a model, verified, and register it", parents=[common],
                      description="REF: a catalogue id, hf://OWNER/REPO/PATH[@REV], hf://OWNER/REPO:QUANT[@REV], "
                                  "or an https:// URL with --sha256")
    p.add_argument("ref")
    p.add_argument("--as", dest="as_id", metavar="ID", help="the model id to register it under")
    p.add_argument("--sha256", help="the file's sha256 (required for a URL)")
    ms.add_parser("pulls", help="pulls in progress and finished since hal0 started", parents=[common])
    p = ms.add_parser("import", help="register models already on this box, without copying them", parents=[common],
                      description="PATH: a model file or folder; --scan: every GGUF in the Hugging Face cache, "
                                  "Ollama's store, LM Studio's and llama.cpp's caches")
    p.add_argument("path", nargs="?")
    p.add_argument("--scan", action="store_true", help="look in the other tools' stores")
    p.add_argument("--as", dest="as_id", metavar="ID", help="the model id (with PATH)")
    p = ms.add_parser("rm", help="forget a model and delete the files hal0 pulled for it", parents=[common])
    p.add_argument("id")
    p = ms.add_parser("catalog", help="the curated models hal0 can pull", parents=[common])
    p.add_argument("--kind", choices=("chat", "embed", "rerank", "stt", "tts", "image"))
    p.add_argument("--fits", action="store_true", help="only models that fit this box (from hardware.json)")


def _size(n: float | None) -> str:
    return "?" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _progress_line(job: dict[str, Any]) -> str:
    done, total = job["done"], job["total"]
    pct = f"{100 * done / total:5.1f}% " if total else ""
    eta = f", {job['eta_s']:.0f}s left" if job.get("eta_s") is not None else ""
    return f"{job['model']}: {pct}{_size(done)} of {_size(total)} at {_size(job['rate'])}/s{eta}"


class _Progress:
    """One pull's progress for a person: a live line on a terminal, a line every few seconds
    otherwise, NDJSON with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self._json, self._tty, self._last = as_json, sys.stdout.isatty(), 0.0

    def show(self, job: dict[str, Any]) -> None:
        if self._json:
            print(json.dumps(job), flush=True)
        elif self._tty:
            print("\r" + _progress_line(job).ljust(78), end="\n" if job["state"] != "running" else "", flush=True)
        elif time.monotonic() - self._last >= 5 or job["state"] != "running":
            self._last = time.monotonic()
            print(_progress_line(job), flush=True)

    def end(self, job: dict[str, Any]) -> int:
        if job["state"] != "done":
            err = job.get("error") or {"code": "model.pull_cancelled", "message": "the pull was cancelled"}
            return fail(ApiError(err["message"], err["code"], details=err.get("details")))
        if not self._json:
            print(f"pulled {job['model']} ({_size(job['done'])})")
        return 0


def _pull(api: ApiClient, args: argparse.Namespace) -> int:
    """Start the pull on the server, then follow its events. Exits 1 if the pull fails."""
    events = api.events()
    next(events)  # subscribed before the pull starts: no event is missed
    body = {"ref": args.ref, "as": args.as_id, "sha256": args.sha256}
    job = api.call("POST", "/api/models/pull", {k: v for k, v in body.items() if v is not None}, timeout=None)
    progress = _Progress(args.json)
    while job["state"] == "running":
        kind, data = next(events)
        if kind == "model.pull" and data.get("id") == job["id"]:
            job = data
            progress.show(job)
    return progress.end(job)


def pull_here(paths: Paths, refs: list[str], as_json: bool) -> int:
    """Pull ``refs`` in this process, one after the other (``hal0 init --pull``: no server yet).
    Returns 1 if any failed."""
    import asyncio

    import aiohttp

    from hal0.events import EventBus
    from hal0.models.pulls import Pulls
    from hal0.models.registry import Registry

    async def run() -> int:
        failed = 0
        events = EventBus()
        async with aiohttp.ClientSession() as session, Pulls(paths, Registry(paths), session, events,
                                                             os.environ) as pulls:
            for ref in refs:
                progress = _Progress(as_json)
                with events.subscribe(maxsize=4096) as sub:
                    try:
                        job = await pulls.start(ref)
                    except Hal0Error as e:
                        failed |= fail(ApiError(e.message, e.code, e.status, e.details))
                        continue
                    while (event := await sub.get()) is not None:
                        if event.kind == "model.pull" and event.data["id"] == job.id:
                            progress.show(event.data)
                            if event.data["state"] != "running":
                                break
                failed |= progress.end(job.to_json())
        return failed
    return asyncio.run(run())


def _capabilities(path: Path) -> list[str]:
    """What a GGUF is for, from its header: rank pooling reranks, other pooling embeds, else chat."""
    from hal0.models.gguf import read_gguf

    try:
        info = read_gguf(path)
    except Hal0Error:
        return []
    if info.pooling_type == 4:
        return ["rerank"]
    return ["embed"] if info.pooling_type or info.architecture in ("bert", "nomic-bert", "xlm-roberta") else ["chat"]


def _import(api: ApiClient, args: argparse.Namespace) -> int:
    """Register a path, or everything --scan finds; ids already taken get a suffix."""
    from hal0.models.imports import Found, candidate_id, scan

    if bool(args.path) == args.scan:
        return fail(ApiError("give a PATH or --scan", "request.invalid"))
    if args.path:
        path = Path(args.path).absolute()
        found = [Found(args.as_id or candidate_id(path.name), path, f"import:{path}")]
    else:
        found = scan(Path.home(), os.environ)
    known = api.call("GET", "/api/models")["models"]
    ids, paths_known = {m["id"] for m in known}, {str(Path(m["path"]).resolve()) for m in known}
    added = []
    for item in found:
        if str(item.path.resolve()) in paths_known:
            continue  # already registered, under whatever id
        mid = item.id
        for n in range(2, 100):
            if mid not in ids:
                break
            mid = f"{item.id}-{n}"
        entry = api.call("POST", "/api/models", {
            "id": mid, "path": str(item.path), "capabilities": _capabilities(item.path) if item.path.is_file() else [],
            "allow_outside_roots": True, "source": item.origin})
        ids.add(mid)
        added.append(entry)
        if not args.json:
            print(f"imported {mid} ({_size(entry['size'])}) from {item.origin}")
    if args.json:
        print_json(added)
    elif not added:
        print("nothing new to import" if found else "no models found")
    return 0


def _box_memory(paths: Paths) -> int | None:
    """The most a model can use here: the primary GPU's memory, or system memory, whichever is
    larger (hardware.json); None before the probe has run."""
    from hal0.hardware.seeding import box_memory

    try:
        hw = json.loads(paths.hardware_json.read_text())
    except (OSError, ValueError):
        return None
    return box_memory(hw)


def _catalog(api: ApiClient, args: argparse.Namespace, paths: Paths) -> int:
    from hal0.models.catalog import load_catalog  # data in the package: no server needed

    memory = _box_memory(paths)
    entries = [e for e in load_catalog(paths.catalog_toml).values() if args.kind in (None, e.kind)
               and not (args.fits and memory is not None and e.memory_gb * 2**30 > memory)]
    try:
        have = {m.get("source") for m in api.call("GET", "/api/models")["models"]}
    except ApiError:
        have = set()  # no server: nothing is marked as on disk
    if args.json:
        print_json([{"id": e.id, "kind": e.kind, "size": e.size, "memory_gb": e.memory_gb,
                     "fits": None if memory is None else e.memory_gb * 2**30 <= memory,
                     "description": e.description, "on_disk": e.id in have} for e in entries])
        return 0

    def fits(gb: float) -> str:
        return "?" if memory is None else "yes" if gb * 2**30 <= memory else "no"
    table([(e.id, e.kind, _size(e.size), e.memory_gb, fits(e.memory_gb), "yes" if e.id in have else "",
            e.description) for e in entries], ["ID", "KIND", "SIZE", "MEMORY GB", "FITS", "ON DISK", "DESCRIPTION"])
    return 0


def run(args: argparse.Namespace, paths: Paths) -> int:
    api = ApiClient(paths)
    try:
        if args.model_command == "pull":
            return _pull(api, args)
        if args.model_command == "catalog":
            return _catalog(api, args, paths)
        if args.model_command == "pulls":
            pulls = api.call("GET", "/api/models/pulls")["pulls"]
            rows = [(j["id"], j["model"], j["state"], _progress_line(j)) for j in pulls]
            print_json(pulls) if args.json else table(rows, ["ID", "MODEL", "STATE", "PROGRESS"])
            return 0
        if args.model_command == "import":
            return _import(api, args)
        if args.model_command == "rm":
            out = api.call("DELETE", f"/api/models/{args.id}")
            print_json(out) if args.json else print(f"removed {out['removed']}")
            return 0
        if args.model_command == "list":
            models = api.call("GET", "/api/models")["models"]
            if args.json:
                print_json(models)
            else:
                slots = api.call("GET", "/api/slots")["slots"]

                def users(mid: str) -> str | None:
                    return ",".join(s["name"] for s in slots if mid in (s["model"], s["model_configured"])) or None
                table([(m["id"], ",".join(m["capabilities"]) or None, _size(m["size"]),
                        "yes" if m.get("verified") else "no", users(m["id"]), m.get("source") or "local", m["path"])
                       for m in models], ["ID", "CAPABILITIES", "SIZE", "VERIFIED", "SLOTS", "SOURCE", "PATH"])
        elif args.model_command == "show":
            print_json(api.call("GET", f"/api/models/{args.id}"))
        else:
            entry = api.call("POST", "/api/models", {"id": args.id, "path": str(Path(args.path).absolute()),
                                                      "capabilities": args.capabilities,
                                                      "allow_outside_roots": args.outside_roots})
            print_json(entry) if args.json else print(f"registered {entry['id']} -> {entry['path']}")
        return 0
    except ApiError as e:
        return fail(e)
