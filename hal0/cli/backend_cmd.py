"""``hal0 backend {install,list}``: engine virtualenvs (local, no server needed)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hal0.backends import ENGINES, RUNNER_DEPS, install, installed
from hal0.cli.output import print_json, table
from hal0.paths import Paths

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser("backend", help="install engines: runner virtualenvs, ComfyUI and Open WebUI", parents=[common],
                       description="install engines: runner virtualenvs, ComfyUI and Open WebUI")
    bs = b.add_subparsers(dest="backend_command", required=True, metavar="ACTION")
    p = bs.add_parser("install", help="create or update an engine's virtualenv", parents=[common])
    p.add_argument("kind", choices=sorted(ENGINES))
    p.add_argument("--torch", metavar="SPECS", default="",
                   help="comfyui, openwebui: the torch and torchvision requirements to install instead of hal0's pair, "
                        "e.g. 'torch==2.9.1 torchvision==0.24.1' (with --torch-index-url for a ROCm build)")
    p.add_argument("--torch-index-url", metavar="URL", default="",
                   help="comfyui, openwebui: the package index torch comes from, e.g. https://download.pytorch.org/whl/rocm6.4")
    bs.add_parser("list", help="installed engines", parents=[common])


def run(args: argparse.Namespace, paths: Paths) -> int:
    if args.backend_command == "list":
        found = installed(paths)
        if args.json:
            print_json(found)
        else:
            table([(k, "yes" if k in found else "no", found.get(k, {}).get("installed_at"),
                    " ".join(p for p in found[k]["packages"] if p not in RUNNER_DEPS)  # type: ignore[attr-defined]
                    if k in found else None)
                   for k in ENGINES], ["ENGINE", "INSTALLED", "WHEN", "PACKAGES"])
        return 0
    if args.kind not in ("comfyui", "openwebui") and (args.torch or args.torch_index_url):
        print("hal0: --torch and --torch-index-url apply to comfyui and openwebui only", file=sys.stderr)
        return 2
    try:
        install(paths, args.kind, lambda line: print(line, flush=True), torch=args.torch.split(),
                torch_index_url=args.torch_index_url)
    except RuntimeError as e:
        print(f"hal0: {e}", file=sys.stderr)
        return 1
    return 0
