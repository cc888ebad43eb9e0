"""Adapter servers for engines without an OpenAI server of their own.

Each runs as its own slot process, ``hal0 runner <kind> --port P --model M``, started with
the interpreter of that engine's virtualenv, so a crash or a heavy import never touches the
API process. ``base.py`` is what every runner shares; ``engines/`` holds one module per
kind, and only those modules import the engine's packages.
"""

from __future__ import annotations

__all__ = ["RUNNER_KINDS"]

RUNNER_KINDS = ("whisper", "moonshine", "kokoro")
