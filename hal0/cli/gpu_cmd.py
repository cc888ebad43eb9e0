"""``hal0 gpu release``: a thin client of /api/gpu/release."""

from __future__ import annotations

import argparse
from typing import Any

from hal0.cli.output import fail, print_json
from hal0.client import ApiClient, ApiError
from hal0.paths import Paths

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    g = sub.add_parser("gpu", help="give GPU memory back", parents=[common], description="give GPU memory back")
    gs = g.add_subparsers(dest="gpu_command", required=True, metavar="ACTION")
    gs.add_parser("release", parents=[common], help="unload every idle, unpinned slot now (for a game or a render)",
                  description="unload every idle, unpinned slot now; pinned slots and slots with requests in "
                              "flight stay")


def run(args: argparse.Namespace, paths: Paths) -> int:
    try:
        out = ApiClient(paths).call("POST", "/api/gpu/release", {}, timeout=None)
    except ApiError as e:
        return fail(e)
    if args.json:
        print_json(out)
        return 0
    print(f"released: {', '.join(out['released']) or 'nothing'}")
    for kept in out["kept"]:
        print(f"kept {kept['slot']}: {kept['reason']}")
    return 0
