"""Printing helpers shared by CLI commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from hal0.client import ApiError

__all__ = ["fail", "print_json", "table"]


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> None:
    cells = [list(map(str, header)), *[[("-" if v is None else str(v)) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def fail(err: ApiError) -> int:
    print(f"hal0: {err.code}: {err.message}", file=sys.stderr)
    return 1
