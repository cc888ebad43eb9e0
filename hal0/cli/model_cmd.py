"""``hal0 model ...``: the registry, through /api/models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hal0.cli.output import fail, print_json, table
from hal0.client import ApiClient, ApiError
from hal0.paths import Paths

__all__ = ["add_parser", "run"]


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


def run(args: argparse.Namespace, paths: Paths) -> int:
    api = ApiClient(paths)
    try:
        if args.model_command == "list":
            models = api.call("GET", "/api/models")["models"]
            if args.json:
                print_json(models)
            else:
                table([(m["id"], ",".join(m["capabilities"]) or None, f"{m['size'] / 1e6:.1f} MB", m["path"])
                       for m in models], ["ID", "CAPABILITIES", "SIZE", "PATH"])
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
