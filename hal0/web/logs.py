"""How hal0's log lines look: text or JSON, each with the id of the request it was written for.

The request id middleware puts the id in a context variable; every line logged while that
request's handler runs (the access log line included) carries it, in text as `` rid=<id>`` and
in JSON as ``"request_id"``. Under systemd (``$JOURNAL_STREAM``) the journal stamps each line,
so hal0 writes no time of its own and prefixes the line's priority (``<3>``) for the journal.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import Any, Literal

__all__ = ["CURRENT_REQUEST_ID", "JsonFormatter", "TextFormatter", "configure_logging", "stop_logging"]

QUEUE_LINES = 10_000  # log records waiting for stderr before new ones are dropped (and counted)

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
        elif record.exc_text:  # rendered where it was logged (the writer thread has no traceback)
            out["exception"] = record.exc_text
        line = json.dumps(out, ensure_ascii=False)
        return f"<{_PRIORITY.get(record.levelno, 6)}>{line}" if self._journal else line


class _Enqueue(logging.handlers.QueueHandler):
    """Hands each record to the writer thread, with what only the logging thread knows (its request
    id, its message and traceback as text); never waits: a full queue drops the record and counts it."""

    def __init__(self, q: queue.Queue[Any]) -> None:
        super().__init__(q)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.request_id = _request_id(record)
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Write(logging.StreamHandler):  # type: ignore[type-arg]
    """The writer thread's handler: says how many records were dropped before the next one."""

    def __init__(self, stream: Any, source: _Enqueue) -> None:
        super().__init__(stream)
        self._source, self._reported = source, 0

    def emit(self, record: logging.LogRecord) -> None:
        if (dropped := self._source.dropped) != self._reported:
            note = logging.LogRecord("hal0", logging.WARNING, __file__, 0, "%d log lines were dropped: their "
                                     "output was not read", (dropped - self._reported,), None)
            self._reported = dropped
            super().emit(note)
        super().emit(record)


class _Writer:
    """The thread that writes queued records (a daemon: a reader that never reads again cannot
    keep hal0 from exiting)."""

    def __init__(self, q: queue.Queue[Any], handler: logging.Handler) -> None:
        self._q, self._handler = q, handler
        self._thread = threading.Thread(target=self._run, name="hal0-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (record := self._q.get()) is not None:
            self._handler.handle(record)

    def stop(self, timeout: float) -> None:
        """Write what is queued, for ``timeout`` seconds at most."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self._q.put(None, timeout=max(deadline - time.monotonic(), 0.001))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return
        self._thread.join(max(deadline - time.monotonic(), 0))


_writer: _Writer | None = None
_lock = threading.Lock()


def configure_logging(fmt: Literal["text", "json"], *, journal: bool, level: int = logging.INFO) -> None:
    """Send hal0's log to stderr in ``fmt``; replaces any handler set before.

    A thread writes the lines: a reader that stops reading (a paused pager, a full pipe) never
    blocks the event loop, which only queues them. Beyond ``QUEUE_LINES`` waiting, lines are
    dropped, and the next line written says how many.
    """
    global _writer
    q: queue.Queue[Any] = queue.Queue(QUEUE_LINES)
    enqueue = _Enqueue(q)
    write = _Write(sys.stderr, enqueue)
    write.setFormatter(JsonFormatter(journal) if fmt == "json" else TextFormatter(journal))
    with _lock:
        before, _writer = _writer, _Writer(q, write)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(enqueue)
    root.setLevel(level)
    if before is not None:  # what the last configuration queued still goes out
        before.stop(5.0)


def stop_logging(timeout: float = 5.0) -> None:
    """Write what is queued and end the writer thread (at exit, or before configuring anew); gives
    up after ``timeout`` seconds when nobody reads the output."""
    global _writer
    with _lock:
        writer, _writer = _writer, None
    if writer is not None:
        writer.stop(timeout)


atexit.register(stop_logging)
