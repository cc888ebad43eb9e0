"""``hal0 worker``: llama.cpp's rpc-server for another box's slots (docs/multi-box.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from hal0.errors import Hal0Error
from hal0.paths import Paths

DEFAULT_PORT = 50052  # rpc-server's own default


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    w = sub.add_parser("worker", parents=[common], help="run llama.cpp's rpc-server for other boxes' slots",
                       description="Run llama.cpp's rpc-server under hal0's supervision, behind a gate that "
                                   "lets only --allow addresses through (rpc-server has no authentication). "
                                   "A slot on another box uses it with rpc = [\"HOST:PORT\"].")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other "
                   "needs --allow)")
    w.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    w.add_argument("--allow", action="append", default=[], metavar="CIDR",
                   help="an address or network that may connect, e.g. 192.168.1.10/32 (repeatable); "
                        "without it only loopback may")
    w.add_argument("--threads", type=int, default=0, help="CPU threads of rpc-server (default: every core)")
    w.add_argument("--cache", action="store_true", help="let rpc-server cache tensors on disk (faster reloads)")
    w.add_argument("--device", default="", help="rpc-server's devices, comma-separated (default: all)")
    w.add_argument("--bin", default="", help="the rpc-server executable (default: beside "
                   "[providers.llama-server].bin, else on PATH)")


def run(args: argparse.Namespace, paths: Paths) -> int:
    from hal0.server.systemd import journal_logging
    from hal0.worker.run import run_worker, worker_options

    stamp = "" if journal_logging(os.environ) else "%(asctime)s "
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=stamp + "%(levelname)s %(name)s: %(message)s")
    try:
        opts = worker_options(paths, args.host, args.port, args.allow, binary=args.bin, threads=args.threads,
                              cache=args.cache, device=args.device)
    except Hal0Error as e:
        print(f"hal0 worker: {e.message}", file=sys.stderr)
        return 2
    return asyncio.run(run_worker(opts, paths.state_dir))
