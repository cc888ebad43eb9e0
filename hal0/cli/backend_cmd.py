"""``hal0 backend {install,list}``: engine virtualenvs (local, no server needed)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hal0.backends import ENGINES, install, installed
from hal0.cli.output import print_json, table
from hal0.paths import Paths

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser("backend", help="install engines that run as hal0 runners", parents=[common],
                       description="install engines that run as hal0 runners")
    bs = b.add_subparsers(dest="backend_command", required=True, metavar="ACTION")
    p = bs.add_parser("install", help="create or update an engine's virtualenv", parents=[common])
    p.add_argument("kind", choices=sorted(ENGINES))
    bs.add_parser("list", help="installed engines", parents=[common])


def run(args: argparse.Namespace, paths: Paths) -> int:
    if args.backend_command == "list":
        found = installed(paths)
        if args.json:
            print_json(found)
        else:
            table([(k, "yes" if k in found else "no", found.get(k, {}).get("installed_at"),
                    " ".join(found[k]["packages"][:len(ENGINES[k])]) if k in found else None)  # type: ignore[index]
                   for k in ENGINES], ["ENGINE", "INSTALLED", "WHEN", "PACKAGES"])
        return 0
    try:
        install(paths, args.kind, lambda line: print(line, flush=True))
    except RuntimeError as e:
        print(f"hal0: {e}", file=sys.stderr)
        return 1
    return 0
