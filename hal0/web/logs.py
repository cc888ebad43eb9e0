"""How hal0's log lines look: text or JSON, each with the id of the request it was written for.

The request id middleware puts the id in a context variable; every line logged while that
request's handler runs (the access log line included) carries it, in text as `` rid=<id>`` and
in JSON as ``"request_id"``. Under systemd (``$JOURNAL_STREAM``) the journal stamps each line,
so hal0 writes no time of its own and prefixes the line's priority (``<3>``) for the journal.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, Literal

__all__ = ["CURRENT_REQUEST_ID", "JsonFormatter", "TextFormatter", "configure_logging"]

CURRENT_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("hal0_request_id", default=None)
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def _request_id(record: logging.LogRecord) -> str | None:
    rid = getattr(record, "request_id", None)
    return rid if isinstance(rid, str) else CURRENT_REQUEST_ID.get()


class TextFormatter(logging.Formatter):
    """``[<prio>]TIME LEVEL logger: message rid=ID`` (no time and a priority under the journal)."""

    def __init__(self, journal: bool) -> None:
        super().__init__(("" if journal else "%(asctime)s ") + "%(levelname)s %(name)s: %(message)s")
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = _request_id(record)
        if rid is not None and "rid=" not in record.getMessage():
            line += f" rid={rid}"
        if self._journal:
            prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
            line = "\n".join(prefix + part for part in line.split("\n"))  # a traceback keeps its priority
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (not under the journal), ``level``, ``logger``, ``message``,
    ``request_id`` when there is one, ``exception`` with a traceback."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self._journal = journal

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {}
        if not self._journal:
            out["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
                f".{int(record.msecs):03d}Z"
        out.update(level=record.levelname.lower(), logger=record.name, message=record.getMessage())
        rid = _request_id(record)
        if rid is not None:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        line = json.dumps(out, ensure_ascii=False)
        return f"<{_PRIORITY.get(record.levelno, 6)}>{line}" if self._journal else line


def configure_logging(fmt: Literal["text", "json"], *, journal: bool, level: int = logging.INFO) -> None:
    """Send hal0's log to stderr in ``fmt``; replaces any handler set before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(journal) if fmt == "json" else TextFormatter(journal))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
