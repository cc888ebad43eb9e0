"""Pull jobs: a reference becomes files on disk, verified, then one registry entry.

A reference is a catalogue id, ``hf://OWNER/REPO/PATH[@REV]``, ``hf://OWNER/REPO:QUANT[@REV]``, or
an http(s) URL with its sha256. Files land in ``<state>/models/<id>/``; the model is registered
only once every file is there and verified, so nothing half-downloaded is ever registered. Two
pulls of one file share one download. Progress goes out as ``model.pull`` events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from hal0.errors import (
    Hal0Error,
    ModelInvalid,
    ModelNotFound,
    ModelPullFailed,
    PullCancelled,
    PullNotFound,
    RequestInvalid,
)
from hal0.events import EventBus
from hal0.models.catalog import CatalogEntry, catalog_entry
from hal0.models.download import Fetched, Source, download
from hal0.models.hub import Hub, parse_hf, pick_quant
from hal0.models.registry import MODEL_ID_RE, ModelEntry, ModelFile, Registry
from hal0.paths import Paths

__all__ = ["KIND_CAPABILITIES", "Plan", "PullJob", "Pulls"]

log = logging.getLogger("hal0.models")
KIND_CAPABILITIES = {"chat": ("chat",), "embed": ("embed",), "rerank": ("rerank",), "stt": ("stt",),
                     "tts": ("tts",), "image": ("image",)}
PROGRESS_EVERY_S = 0.25
FIRST_FILE_PROVIDERS = frozenset({"kokoro"})  # multi-file models a backend opens by their first file
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PlannedFile:
    source: Source
    path: str  # inside the model's folder
    origin: str  # the reference it came from, for the registry


@dataclass(frozen=True)
class Plan:
    model_id: str
    files: tuple[PlannedFile, ...]
    source: str
    revision: str = ""
    capabilities: tuple[str, ...] = ()
    entry: str = ""  # the file a backend loads ("" : the model's folder)


@dataclass
class PullJob:
    id: str
    ref: str
    model_id: str
    state: str = "running"  # running, done, failed, cancelled
    done: int = 0
    total: int | None = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    result: asyncio.Future[ModelEntry] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def to_json(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if self.total and rate and self.state == "running" else None
        return {"id": self.id, "ref": self.ref, "model": self.model_id, "state": self.state, "done": self.done,
                "total": self.total, "rate": round(rate), "eta_s": round(eta, 1) if eta is not None else None,
                "error": self.error}


def _stem_id(name: str) -> str:
    stem = re.sub(r"\.(gguf|safetensors|ckpt|onnx|bin)$", "", name, flags=re.I).lower()
    return re.sub(r"-\d{5}-of-\d{5}$", "", stem)


def _model_id(as_id: str | None, default: str) -> str:
    mid = as_id or default
    if not MODEL_ID_RE.match(mid):
        raise ModelInvalid(f"model id {mid!r} must match {MODEL_ID_RE.pattern}; choose one with --as", param="as")
    return mid


class Pulls:
    """Owns every pull job; ``async with Pulls(...)`` keeps them in one TaskGroup."""

    def __init__(self, paths: Paths, registry: Registry, session: aiohttp.ClientSession, events: EventBus,
                 env: Mapping[str, str]) -> None:
        self._paths, self.registry, self._session, self.events = paths, registry, session, events
        self.hub = Hub.from_env(env)
        self._jobs: dict[str, PullJob] = {}
        self._files: dict[Path, asyncio.Task[Fetched | Hal0Error]] = {}  # downloads in progress, shared by jobs
        self._waiting: dict[Path, int] = {}  # jobs waiting on each of them
        self._ids = itertools.count(1)
        self._tg = asyncio.TaskGroup()
        self._listeners: list[Callable[[PullJob], None]] = []

    async def __aenter__(self) -> Pulls:
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for job in self._jobs.values():
            if job.task is not None:
                job.task.cancel()
        await self._tg.__aexit__(None, None, None)

    # --- planning -------------------------------------------------------------------

    async def plan(self, ref: str, as_id: str | None = None, sha256: str | None = None) -> Plan:
        """What ``ref`` means: the files to fetch and the entry they make. Raises RequestInvalid,
        ModelNotFound, ModelInvalid or ModelPullFailed (a hub that cannot be listed)."""
        if ref.startswith("hf://"):
            return await self._plan_hub(ref, as_id)
        if ref.startswith(("https://", "http://")):
            if not sha256 or not _SHA256.fullmatch(sha256.lower()):
                raise RequestInvalid("a URL needs its sha256 (`--sha256 HEX`): hal0 serves only verified files",
                                     param="sha256")
            name = unquote(urlsplit(ref).path.rsplit("/", 1)[-1]) or "model"
            mid = _model_id(as_id, _stem_id(name))
            return Plan(mid, (PlannedFile(Source(ref, sha256=sha256.lower()), name, ref),), ref, entry=name)
        entry = self.catalog_entry(ref)
        if entry is None:
            raise ModelNotFound(f"{ref!r} is not in the catalogue (`hal0 model catalog` lists it), nor an hf:// "
                                "reference or a URL", model=ref)
        files = []
        for f in entry.files:
            if f.source.startswith("hf://"):
                h = parse_hf(f.source)
                assert h.path is not None
                url = self.hub.file_url(h.repo, h.path, h.revision)
                src = Source(url, f.size, f.sha256, self.hub.host, self.hub.token)
                files.append(PlannedFile(src, f.path, f.source))
            else:
                files.append(PlannedFile(Source(f.source, f.size, f.sha256), f.path, f.source))
        # One file, or Kokoro's model beside its voices: the backend opens the first file; else the folder.
        opens = files[0].path if len(files) == 1 or entry.provider in FIRST_FILE_PROVIDERS else ""
        return Plan(_model_id(as_id, entry.id), tuple(files), ref, "", KIND_CAPABILITIES.get(entry.kind, ()), opens)

    async def _plan_hub(self, ref: str, as_id: str | None) -> Plan:
        h = parse_hf(ref)
        commit, listing = await self.hub.files(self._session, h.repo, h.revision)
        if h.quant:
            chosen = pick_quant(listing, h.quant)
            default = f"{h.repo.rsplit('/', 1)[1]}-{h.quant}".lower()
        else:
            chosen = [f for f in listing if f.path == h.path]
            if not chosen:
                raise ModelNotFound(f"{h.path} is not in {h.repo}@{h.revision}", repo=h.repo, path=h.path)
            default = _stem_id(chosen[0].path.rsplit("/", 1)[-1])
        files = tuple(PlannedFile(Source(self.hub.file_url(h.repo, f.path, commit), f.size, f.sha256, self.hub.host,
                                         self.hub.token), f.path.rsplit("/", 1)[-1],
                                  f"hf://{h.repo}/{f.path}@{commit}") for f in chosen)
        return Plan(_model_id(as_id, default), files, ref, commit, entry=files[0].path)

    def catalog_entry(self, model_id: str) -> CatalogEntry | None:
        """The shipped catalogue with the operator's ``catalog.toml`` over it (blocks: a small read)."""
        return catalog_entry(model_id, self._paths.catalog_toml)

    # --- jobs -----------------------------------------------------------------------

    async def start(self, ref: str, as_id: str | None = None, sha256: str | None = None) -> PullJob:
        """Plan ``ref`` (errors raise here) and start fetching it; returns the job at once."""
        plan = await self.plan(ref, as_id, sha256)
        job = PullJob(f"pull-{next(self._ids)}", ref, plan.model_id)
        self._jobs[job.id] = job
        job.task = self._tg.create_task(self._run(job, plan))
        self._publish(job)
        return job

    async def pull(self, ref: str) -> ModelEntry:
        """Pull ``ref`` and wait for its registry entry (a slot asking for a missing model).
        Raises what the pull failed with; cancelling the caller does not cancel the pull."""
        job = await self.start(ref)
        return await asyncio.shield(job.result)

    def jobs(self) -> list[PullJob]:
        return list(self._jobs.values())

    def get(self, job_id: str) -> PullJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise PullNotFound(f"no pull {job_id!r}; `hal0 model pulls` lists them", pull=job_id) from None

    def cancel(self, job_id: str) -> PullJob:
        job = self.get(job_id)
        if job.task is not None and not job.task.done():
            job.task.cancel()
        return job

    async def _run(self, job: PullJob, plan: Plan) -> None:
        folder = self._paths.models_dir / plan.model_id
        sizes = [f.source.size for f in plan.files]
        job.total = sum(s for s in sizes if s) if all(sizes) else None
        here = [0] * len(plan.files)
        last = [0.0]
        trailing: list[asyncio.TimerHandle | None] = [None]

        def publish() -> None:
            if trailing[0] is not None:
                trailing[0].cancel()
            trailing[0] = None
            last[0] = time.monotonic()
            self._publish(job)

        def progress(i: int, have: int, total: int | None) -> None:
            here[i] = have
            job.done = sum(here)
            if total is not None and job.total is None and len(plan.files) == 1:
                job.total = total
            wait = PROGRESS_EVERY_S - (time.monotonic() - last[0])
            if wait <= 0 or have == total:
                publish()
            elif trailing[0] is None:  # at most one event per interval, and the latest always goes out:
                trailing[0] = asyncio.get_running_loop().call_later(wait, publish)  # a stall must not hide it

        try:
            fetched = []
            for i, f in enumerate(plan.files):
                fetched.append(await self._fetch(f, folder / f.path, lambda h, t, i=i: progress(i, h, t)))
            files = tuple(ModelFile(str(folder / f.path), r.size, r.sha256 if r.verified else "", f.origin)
                          for f, r in zip(plan.files, fetched, strict=True))
            path = folder / plan.entry if plan.entry else folder
            entry = await asyncio.to_thread(self.registry.register, plan.model_id, path, plan.capabilities,
                                            outside_roots=True, source=plan.source, revision=plan.revision,
                                            files=files)
        except asyncio.CancelledError:
            job.state = "cancelled"
            job.result.set_exception(PullCancelled(f"the pull of {job.ref} was cancelled", pull=job.id))
            job.result.exception()  # retrieved: nobody need be waiting
            self._publish(job)
            raise
        except Exception as e:  # kept in the job, never raised into the TaskGroup
            if not isinstance(e, Hal0Error):
                log.exception("pull of %s failed", job.ref)
                e = ModelPullFailed(f"the pull of {job.ref} failed: {e}", pull=job.id)
            job.state, job.error = "failed", {"code": e.code, "message": e.message, "details": e.details}
            job.result.set_exception(e)
            job.result.exception()
            self._publish(job)
            return
        finally:
            if trailing[0] is not None:  # the final event says it all
                trailing[0].cancel()
        job.state = "done"
        job.result.set_result(entry)
        self._publish(job)

    async def _fetch(self, f: PlannedFile, dest: Path, progress: Any) -> Fetched:
        """One file; a second job for the same file waits for the first one's download. The
        download stops when the last job waiting for it is cancelled (its partial file stays)."""
        task = self._files.get(dest)
        if task is None:
            task = self._tg.create_task(self._download(f.source, dest, progress))
            self._files[dest] = task
        self._waiting[dest] = self._waiting.get(dest, 0) + 1
        try:
            outcome = await asyncio.shield(task)
        finally:
            self._waiting[dest] -= 1
            if not self._waiting[dest]:
                del self._waiting[dest]
                task.cancel()  # nobody waits any more (done: a no-op)
        if isinstance(outcome, Hal0Error):
            raise outcome
        return outcome

    async def _download(self, src: Source, dest: Path, progress: Any) -> Fetched | Hal0Error:
        try:
            return await download(self._session, src, dest, progress)
        except Hal0Error as e:  # returned to every waiting job, never raised into the TaskGroup
            return e
        except Exception as e:  # a disk that refuses a write, say: the pull fails, the service does not
            log.exception("download of %s failed", src.url)
            return ModelPullFailed(f"writing {dest} failed: {e}", url=src.url)
        finally:
            self._files.pop(dest, None)

    def subscribe(self, listener: Callable[[PullJob], None]) -> Callable[[], None]:
        """Call ``listener`` (synchronously; quick, never raising) with a job at its start, at
        each progress report and at its end; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _publish(self, job: PullJob) -> None:
        for listener in self._listeners:
            listener(job)
        if self.events.subscriber_count:
            self.events.publish("model.pull", job.to_json())
