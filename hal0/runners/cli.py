"""``hal0 runner <kind>``: run one adapter server (under the engine's own interpreter)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from hal0.runners import RUNNER_KINDS

    # allow_abbrev=False: no prefix of --host or --port may reach them (hal0.providers.reserved)
    p = sub.add_parser("runner", help="run an engine's adapter server (hal0 starts these itself)",
                       parents=[common], description="run an engine's adapter server (hal0 starts these itself)",
                       allow_abbrev=False)
    p.add_argument("kind", choices=RUNNER_KINDS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True, help="the model's file or folder")
    p.add_argument("--model-id", help="the id /v1/models shows (default: the file or folder name)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the engine's choice)")
    p.add_argument("--voices", help="kokoro: the voices file (default: voices*.npz/bin beside the model)")
    p.add_argument("--default-voice", help="kokoro: the voice OpenAI's voice names map to (default: the first)")


def run(args: argparse.Namespace) -> int:
    from hal0.runners.base import run_runner

    if args.kind == "whisper":
        from hal0.runners.engines.whisper import WhisperEngine

        return run_runner(WhisperEngine, args)
    if args.kind == "moonshine":
        from hal0.runners.engines.moonshine import MoonshineEngine

        return run_runner(MoonshineEngine, args)
    if args.kind == "kokoro":
        from hal0.runners.engines.kokoro import KokoroEngine

        return run_runner(KokoroEngine, args)
    raise AssertionError(args.kind)  # argparse restricts kind to RUNNER_KINDS
