"""One slot: its owner task, its backend process, its lifecycle (see DESIGN.md).

Callers never change a slot directly: they send a command (``hal0.slots.commands``) to its
owner task (``hal0.slots.owner``: one operation at a time, interruptible by unload, disable
and shutdown) and await the answer; this module is what each command does. ``admit()`` is
the one way a request reaches the backend: the gate's counts and the
``serving`` <-> ``ready`` flips are synchronous on the event loop, never decided elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from hal0.atomic import atomic_write
from hal0.backends import engine_settings
from hal0.config.defaults import render_slot_toml
from hal0.config.overrides import read_override, write_override
from hal0.config.schema import MemoryConfig, ProviderConfig, SlotConfig, SlotsConfig
from hal0.config.sizes import parse_size
from hal0.errors import (
    Hal0Error,
    InternalError,
    ModelNotFound,
    ModelTooLarge,
    SlotDisabled,
    SlotIllegalTransition,
    SlotLoading,
    SlotNoMemory,
    SlotNoModel,
    SlotPortInUse,
    SlotPulling,
    SlotReservedArg,
    SlotStartFailed,
    SlotStateError,
    SlotSwapFailed,
    WorkerUnreachable,
)
from hal0.hardware.fit import too_large
from hal0.hardware.flavors import GPU_FLAVORS
from hal0.hardware.usage import Usage, measure
from hal0.llamacpp.devices import gpu_seen
from hal0.models.pulls import PullJob, Pulls
from hal0.models.registry import Registry, ResolvedModel
from hal0.paths import Paths
from hal0.providers import PROVIDERS, LaunchSpec, Provider, Readiness, check_extra_args, get_provider
from hal0.roles import Modality, slot_kind
from hal0.slots import prompt_cache, readiness, workers
from hal0.slots.changes import ChangeChannel
from hal0.slots.commands import (
    Autorestart,
    Autostart,
    BackendLost,
    Command,
    Disable,
    Enable,
    EnsureReady,
    Evict,
    IdleCheck,
    KeepAlive,
    Load,
    MemoryMeasured,
    Restart,
    SetBackend,
    Shutdown,
    Swap,
    Unload,
    UnloadIdle,
    WorkerCheck,
)
from hal0.slots.gate import Gate
from hal0.slots.ledger import Measured, MemoryLedger, expected_need
from hal0.slots.owner import Owner
from hal0.slots.persist import StateWriter
from hal0.slots.policy import RestartPolicy, Supervision
from hal0.slots.ports import port_is_free
from hal0.slots.process import BackendProcess, LogRing
from hal0.slots.residency import Need, Resident, RoomKeeper
from hal0.slots.state import DISPATCHABLE, SlotChanged, SlotSnapshot, SlotState, is_legal

__all__ = ["Slot", "SlotDeps"]

log = logging.getLogger("hal0.slots")
S = SlotState
_NOT_ERROR = tuple(set(SlotState) - {SlotState.ERROR})
_WORKER_TIMEOUT_S = 2.0  # one TCP connect to an RPC worker


def _gate_bounds(config: SlotConfig) -> tuple[int, int]:
    """(requests forwarded at once, requests waiting in hal0 for a place): ``max_inflight`` and
    ``max_queue``, except on llama-server.

    A chat slot with ``[server].parallel N`` forwards N: its requests are long, so one waiting in
    hal0 (where it can still be cancelled cheaply) costs nothing. An embedding or rerank slot
    forwards everything it admits (``max_inflight + max_queue``) and queues nothing itself: its
    requests take milliseconds and llama-server batches whatever it has queued, so its own queue
    is the better one. Sent one at a time as hal0 relayed earlier answers, they left llama-server
    short of work (measured on an H200: 0.43 of the direct rate at 32 concurrent requests with 8
    forwarded, 0.54 with 32, 0.65 with 64).
    """
    if config.provider != "llama-server":
        return config.max_inflight, config.max_queue
    if slot_kind(config.name, config.provider, config.server.extra_args) in (Modality.EMBEDDINGS, Modality.RERANK):
        return config.max_inflight + config.max_queue, 0
    return config.server.parallel or config.max_inflight, config.max_queue


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A start nobody waits for any more: its outcome is in the slot's state, not lost here."""
    if not fut.cancelled():
        fut.exception()


@dataclass(frozen=True)
class SlotDeps:
    """What every slot shares: injected, never global."""

    paths: Paths
    settings: SlotsConfig
    registry: Registry
    providers: dict[str, ProviderConfig]
    session: aiohttp.ClientSession
    supervision: Supervision = field(default_factory=Supervision)
    changes: ChangeChannel = field(default_factory=ChangeChannel)  # the manager sets its own
    pulls: Pulls | None = None  # set: a catalogue model that is not on disk is pulled on start
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    ledger: MemoryLedger | None = None  # the last measured figure per model (memory.json)
    room: RoomKeeper | None = None  # the manager: makes room within the memory budget before a load


class Admitted:
    """``async with slot.admit():`` a place at the gate, a dispatchable slot, and the request counted
    as serving until the block ends. Raises SlotBusy (no place), SlotLoading (not ready within
    ``wait_ready_s``), SlotDisabled, SlotStateError, SlotNoModel or SlotStartFailed."""

    __slots__ = ("_slot",)

    def __init__(self, slot: Slot) -> None:
        self._slot = slot

    async def __aenter__(self) -> Slot:
        slot = self._slot
        await slot._gate.enter()
        try:
            await slot._wait_dispatchable()
        except BaseException:
            slot._gate.leave()
            raise
        slot._begin()  # no await since the slot was seen dispatchable
        return slot

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        slot = self._slot
        slot._end()
        slot._gate.leave()


class Slot(Owner):
    def __init__(self, config: SlotConfig, deps: SlotDeps) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self._deps = deps
        self.log = LogRing()
        self._state = S.OFFLINE
        self._message = ""
        self._last_error = ""
        self._model: ResolvedModel | None = None
        self._model_ref: str | None = None
        self._override = read_override(deps.paths, config.name)  # slots/<name>.env, read once
        self._proc: BackendProcess | None = None
        self._updated_at = time.time()
        self._changed: asyncio.Event | None = None  # made by the first waiter, set by the next move
        self._movers: list[asyncio.Future[None]] = []  # futures done at the next move
        self._gate = Gate(config.name, *_gate_bounds(config))
        self._kind: str = slot_kind(config.name, config.provider, config.server.extra_args)
        self._last_used = time.monotonic()
        self._keep_alive: float | None = None  # KeepAlive's seconds while the backend runs, else None
        self._policy = RestartPolicy(deps.supervision)
        self._starts = 0  # backends spawned since hal0 started
        self._pull: PullJob | None = None  # the pull in progress while ``pulling``
        self._loaded_at: float | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._timers: dict[type[Command], asyncio.TimerHandle] = {}
        self._writer = StateWriter(deps.paths.slot_state_dir(config.name) / "state.json", self._state_json)
        self._memory: Usage | None = None  # the latest measurement of the running backend
        self._peak: Usage | None = None  # the largest of this load (what the ledger keeps)
        self._need: Need | None = None  # what the load in progress or the running backend was given room for
        self._workers: dict[str, str] = dict.fromkeys(config.rpc, "unknown")  # RPC worker -> "up" or why not
        self._gpu_seen: tuple[str, int, tuple[tuple[str, str], ...]] | None = None  # see _check_gpu

    # --- reading -----------------------------------------------------------------

    @property
    def state(self) -> SlotState:
        return self._state

    def snapshot(self) -> SlotSnapshot:
        return SlotSnapshot(
            name=self.name, state=self._state, kind=self.kind, provider=self.config.provider,
            backend=self.config.backend, port=self.config.port, enabled=self.config.enabled,
            model=self._model.id if self._model else None, model_ref=self._model_ref,
            configured=self.configured_model(), pid=self._proc.pid if self._proc else None,
            message=self._message, last_error=self._last_error, inflight=self._gate.active,
            queued=self._gate.queued, updated_at=self._updated_at, starts=self._starts,
            pull=self._pull.to_json() if self._pull is not None else None, loaded_at=self._loaded_at,
            expires_at=self._expires_at(), memory=self._memory.to_json() if self._memory is not None else None,
            pinned=self.config.pinned, workers=dict(self._workers))

    def _expires_at(self) -> float | None:
        """Wall time the running backend will be unloaded if no request comes (None: never)."""
        if self._proc is None:
            return None
        if self._keep_alive is not None:
            if self._keep_alive < 0:
                return None
            after = self._keep_alive
        elif self.config.idle_timeout_s > 0 and self.config.unload_after_s > 0:
            after = self.config.idle_timeout_s + self.config.unload_after_s
        else:
            return None
        base = time.time() if self._gate.active else time.time() - (time.monotonic() - self._last_used)
        return base + after

    def counters(self) -> tuple[SlotState, int, int]:
        """State, active and queued requests: the per-request part of a snapshot, cheaply."""
        return self._state, self._gate.active, self._gate.queued

    @property
    def kind(self) -> str:
        return self._kind

    def resident(self) -> Resident | None:
        """What this slot holds, for the manager's eviction plan (the owner re-checks before it
        unloads); None when it holds nothing and is not loading."""
        if self._need is None and self._proc is None:
            return None
        held = self._need or Need()
        if self._memory is not None:
            gpu = self._memory.gpu_bytes if self._memory.gpu_bytes is not None else held.gpu
            held = Need(self._memory.rss_bytes, gpu)
        return Resident(self.name, self.model_id, held, self.config.pinned,
                        busy=not self._gate.vacant.is_set(),
                        evictable=self._proc is not None and self._state in DISPATCHABLE, last_used=self._last_used)

    def configured_model(self) -> str | None:
        """The model a start uses: the swap override, else ``[model].default``."""
        return self._override or self.config.model.default or None

    @property
    def model(self) -> ResolvedModel | None:
        """The model of the latest start (None before the first)."""
        return self._model

    @property
    def model_id(self) -> str | None:
        """The id the backend serves its model under (what a request's ``model`` becomes)."""
        return self._model.id if self._model else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    async def wait_state(self, *states: SlotState, timeout: float | None = None) -> SlotState:
        """Block until the slot is in one of ``states``; raises TimeoutError."""
        async with asyncio.timeout(timeout):
            while self._state not in states:
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()
        return self._state

    # --- commands ----------------------------------------------------------------

    def _next_move(self) -> asyncio.Future[None]:
        """A future done at the slot's next state change."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._movers.append(fut)
        return fut

    async def ensure_ready(self) -> SlotSnapshot:
        """Start the slot if it is offline (single-flight); returns once dispatchable.

        Raises SlotDisabled, SlotStateError (slot in error), SlotNoModel or SlotStartFailed.
        """
        if self._state in DISPATCHABLE:
            return self.snapshot()
        return await self.send(EnsureReady(), SlotSnapshot)

    async def load(self, model: str | None = None, *, force: bool = False) -> SlotSnapshot:
        """Operator load: start (clearing an error), or swap if ``model`` differs."""
        return await self.send(Load(model, force), SlotSnapshot)

    async def unload(self) -> SlotSnapshot:
        return await self.send(Unload(), SlotSnapshot)

    async def restart(self) -> SlotSnapshot:
        return await self.send(Restart(), SlotSnapshot)

    async def swap(self, model: str, *, force: bool = False) -> SlotSnapshot:
        """Load ``model`` in place of the current one; rolls back on failure (SlotSwapFailed).
        Raises ModelTooLarge (the slot untouched) unless ``force``."""
        return await self.send(Swap(model, force), SlotSnapshot)

    async def enable(self) -> SlotSnapshot:
        return await self.send(Enable(), SlotSnapshot)

    async def disable(self) -> SlotSnapshot:
        return await self.send(Disable(), SlotSnapshot)

    async def set_backend(self, backend: str) -> SlotSnapshot:
        """Stop the slot and make ``backend`` its backend (written to its TOML)."""
        return await self.send(SetBackend(backend), SlotSnapshot)

    async def keep_alive(self, seconds: float) -> SlotSnapshot:
        """Unload the running model ``seconds`` after its last request (0: now, once idle; negative:
        never), until the backend stops. Nothing happens to a slot that runs nothing."""
        return await self.send(KeepAlive(seconds), SlotSnapshot)

    async def shutdown(self) -> None:
        """Stop the backend and end the owner task."""
        await self.send(Shutdown(), type(None))

    async def evict(self, wait_s: float, *, timeout: float | None = None) -> str:
        """Unload to free memory unless pinned, or busy for longer than ``wait_s``: "unloaded",
        "pinned", "busy" or "not loaded" (the owner decides, on its own state). Raises
        TimeoutError when the owner does not answer within ``timeout`` (busy with another
        operation); the command then does nothing when its turn comes."""
        until = time.monotonic() + timeout if timeout is not None else float("inf")
        async with asyncio.timeout(timeout):
            return await self.send(Evict(wait_s, until), str)

    # --- admission (synchronous counts, see the module docstring) -------------------

    def admit(self) -> Admitted:
        """The gate for one request: ``async with slot.admit(): ...forward...``."""
        return Admitted(self)

    async def _wait_dispatchable(self) -> None:
        """Wake the slot or wait for it, up to ``wait_ready_s``; raises SlotLoading after that."""
        if self._state in DISPATCHABLE:
            return
        wait = self._deps.settings.wait_ready_s
        deadline = time.monotonic() + wait
        ready: asyncio.Future[Any] | None = None  # one EnsureReady per request, however often the slot moves
        while self._state not in DISPATCHABLE:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                if self._state is S.PULLING:  # minutes, maybe hours: answer now, with the progress
                    raise self._pulling()
                if self._state is S.ERROR and Autorestart in self._timers:  # a restart is due: wait for it
                    await self.wait_state(*_NOT_ERROR, timeout=remaining)
                    continue
                if ready is None or ready.done():
                    ready = self._submit(EnsureReady())
                    ready.add_done_callback(_retrieve)  # read below, unless this request stops waiting for it
                moved = self._next_move()
                await asyncio.wait({ready, moved}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if ready.done():
                    ready.result()  # its error is the request's
                elif not moved.done():
                    raise TimeoutError
                # else the slot moved: look again (a pull answers at once, at the top)
            except TimeoutError:
                raise SlotLoading(f"{self.name} is still {self._state} after {wait:g}s; try again shortly",
                                  retry_after=5, slot=self.name, state=str(self._state)) from None

    def _pulling(self) -> SlotPulling:
        job = self._pull.to_json() if self._pull is not None else {}
        done, total = job.get("done", 0), job.get("total")
        pct = f" ({100 * done / total:.0f} %)" if total else ""
        return SlotPulling(f"{self.name} is pulling its model{pct}; try again when it is ready", retry_after=30,
                           slot=self.name, pull=job)

    def _begin(self) -> None:
        if self._gate.begin() and self._state is not S.SERVING:
            self._transition(S.SERVING)

    def _end(self) -> None:
        self._last_used = time.monotonic()
        if self._gate.end() and self._state is S.SERVING:
            self._transition(S.READY)
            if self._keep_alive == 0:
                self.send_nowait(IdleCheck())
            elif IdleCheck not in self._timers:  # a pending one re-checks the quiet time when it fires
                self._arm(IdleCheck, self._idle_after())

    # --- the owner ---------------------------------------------------------------

    async def run(self) -> None:
        """The owner task: handles commands until ``Shutdown``; always reaps the backend."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._writer.bind(tg)
                self._writer.mark()
                try:
                    await self._loop(tg)
                finally:
                    for timer in self._timers.values():
                        timer.cancel()
                    if self._proc is not None:
                        await self._proc.stop(self._grace())
        finally:
            self._tg = None
            self._writer.bind(None)

    async def _on_shutdown(self) -> None:
        await self._stop_backend()

    async def _handle(self, cmd: Command) -> SlotSnapshot | str | None:
        match cmd:
            case EnsureReady():
                return await self._handle_ensure_ready()
            case Autostart():
                return await self._handle_autostart()
            case Load(model=model, force=force):
                return await self._handle_load(model, force)
            case Unload():
                return await self._handle_unload()
            case Restart():
                return await self._handle_restart()
            case Swap(model=model, force=force):
                return await self._handle_swap(model, force)
            case Enable() | Disable():
                return await self._handle_enabled(isinstance(cmd, Enable))
            case SetBackend(backend=backend):
                return await self._handle_set_backend(backend)
            case BackendLost(proc=proc, reason=reason):
                await self._handle_lost(proc, reason)
            case Autorestart():
                await self._handle_autorestart()
            case IdleCheck():
                await self._handle_idle_check()
            case KeepAlive(seconds=seconds):
                return await self._handle_keep_alive(seconds)
            case UnloadIdle():
                await self._handle_unload_idle()
            case Evict(wait_s=wait_s, until=until):
                return await self._handle_evict(wait_s, until)
            case MemoryMeasured(proc=proc, usage=usage):
                await self._handle_measured(proc, usage)
            case WorkerCheck():
                await self._handle_worker_check()
            case _:
                raise InternalError(f"slot {self.name} does not know the command {cmd!r}",
                                    slot=self.name, command=cmd.label)
        return None

    # --- handlers ----------------------------------------------------------------

    def _require_enabled(self) -> None:
        if not self.config.enabled:
            raise SlotDisabled(f"slot {self.name} is disabled; enable it with `hal0 slot enable {self.name}`",
                               slot=self.name)

    async def _handle_ensure_ready(self) -> SlotSnapshot:
        self._require_enabled()
        if self._state in DISPATCHABLE:
            return self.snapshot()
        if self._state is S.ERROR:
            raise SlotStateError(f"slot {self.name} is in error: {self._message}", slot=self.name,
                                 state="error")
        await self._start(self._require_model(None))
        return self.snapshot()

    async def _handle_autostart(self) -> SlotSnapshot | None:
        """``serve`` starts a slot whose model is on disk; one that must be pulled first waits for
        a load or a request (a pull is a decision: bandwidth, disk)."""
        ref = self._require_model(None)
        try:
            get_provider(self.config.provider).resolve(ref, self._deps.registry)
        except ModelNotFound:
            self.log.append(f"[hal0] {ref} is not on disk: a request or `hal0 slot load {self.name}` pulls it")
            return None
        return await self._handle_ensure_ready()

    async def _handle_load(self, model: str | None, force: bool = False) -> SlotSnapshot:
        self._require_enabled()
        if model is not None and self._proc is not None and model != self._model_ref:
            return await self._handle_swap(model, force)
        if self._state in DISPATCHABLE:
            return self.snapshot()
        self._policy.reset()
        await self._start(self._require_model(model), force=force, cause="load")
        if model is not None:
            await self._set_override(model)  # only a model that loaded becomes the slot's model
        return self.snapshot()

    async def _handle_unload(self) -> SlotSnapshot:
        self._disarm()
        await self._stop_backend()
        return self.snapshot()

    async def _handle_restart(self) -> SlotSnapshot:
        self._require_enabled()
        ref = self._require_model(None)
        await self._stop_backend()
        self._policy.reset()
        await self._start(ref, cause="restart")
        return self.snapshot()

    async def _handle_swap(self, model: str, force: bool = False) -> SlotSnapshot:
        self._require_enabled()
        resolved = get_provider(self.config.provider).resolve(model, self._deps.registry)  # unknown: untouched
        if not force:
            await self._check_fit(resolved)  # too large: untouched
        outcome = "failed"
        try:
            snap = await self._swap(model, force)
            outcome = "ok"
            return snap
        except SlotSwapFailed as e:
            outcome = "rolled_back" if e.details.get("rolled_back") else "failed"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._publish(detail={"swap": outcome})  # the outcome of a swap that began, for the metrics

    async def _swap(self, model: str, force: bool) -> SlotSnapshot:
        previous = self._model_ref if self._proc is not None else None
        old_override = self._override
        await self._set_override(model)
        await self._stop_backend()
        try:
            await self._start(model, force=True, cause="swap", budget=not force)  # the fit was checked above
            return self.snapshot()
        except (SlotStartFailed, SlotNoMemory) as e:
            reason = e.message
            await self._set_override(old_override)
        if previous is None:
            raise SlotSwapFailed(f"swap of {self.name} to {model} failed: {reason}",
                                 slot=self.name, model=model, reason=reason)
        self.log.append(f"[hal0] swap to {model} failed; rolling back to {previous}")
        try:
            await self._start(previous, cause="rollback")
        except (SlotStartFailed, SlotNoMemory) as e:
            raise SlotSwapFailed(f"swap of {self.name} to {model} failed ({reason}) and rolling back "
                                 f"to {previous} failed too: {e.message}", slot=self.name,
                                 model=model, reason=reason, rolled_back=False) from None
        raise SlotSwapFailed(f"swap of {self.name} to {model} failed, rolled back to {previous}: {reason}",
                             slot=self.name, model=model, reason=reason, rolled_back=True, running=previous)

    async def _handle_enabled(self, enabled: bool) -> SlotSnapshot:
        if not enabled:
            self._disarm()
            await self._stop_backend()
        if self.config.enabled != enabled:
            await self._reconfigure(replace(self.config, enabled=enabled))
        return self.snapshot()

    async def _handle_set_backend(self, backend: str) -> SlotSnapshot:
        if backend != self.config.backend:
            self._disarm()
            await self._stop_backend()
            await self._reconfigure(replace(self.config, backend=backend))  # type: ignore[arg-type]
        return self.snapshot()

    async def _handle_lost(self, proc: BackendProcess, reason: str) -> None:
        if proc is not self._proc:
            return  # a process we already replaced or stopped
        self._proc, self._keep_alive = None, None
        self._need = self._memory = self._peak = None
        self._disarm()
        lost = "unresponsive" if reason.startswith(readiness.UNRESPONSIVE) else "exited"
        if self.config.rpc:  # which workers are gone (`hal0 status`), known when the error is published
            self._workers = await workers.check(self.config.rpc, _WORKER_TIMEOUT_S)
        self._after_failure(reason, log_lines=True, retry=True, lost=lost)  # out of the dispatchable set first
        await proc.stop(0)  # it exited, or hangs: nothing to wait for (SIGKILL also ends a SIGSTOP)

    async def _handle_autorestart(self) -> None:
        if self._state is not S.ERROR or not self.config.enabled:
            return
        with contextlib.suppress(Hal0Error):  # _start recorded it and, within the limit, scheduled a retry
            await self._start(self._require_model(None), retry=True)

    async def _handle_worker_check(self) -> None:
        """In ``error`` because an RPC worker was unreachable: start again once every worker
        answers, else look again after the liveness interval."""
        if self._state is not S.ERROR or self._proc is not None or not self.config.enabled:
            return
        states = await workers.check(self.config.rpc, _WORKER_TIMEOUT_S)
        if states != self._workers:
            self._workers = states
            self._publish()
        if workers.down_message(states) is not None:
            self._arm(WorkerCheck, self._worker_interval())
            return
        with contextlib.suppress(Hal0Error):  # _start recorded it (and what follows)
            await self._start(self._require_model(None), retry=True)

    def _worker_interval(self) -> float:
        return self._deps.settings.liveness_interval_s or 2.0

    async def _check_gpu(self, spec: LaunchSpec, flavor: str) -> None:
        """Raise SlotStartFailed when this llama-server slot asks for the GPU the probe found and its
        binary lists none: it would run on the CPU without a word. A binary (same file, same
        environment) that once listed it is not asked again; a slot with RPC workers is not asked."""
        if self.config.provider != "llama-server" or self.config.backend not in GPU_FLAVORS or self.config.rpc:
            return
        binary = Path(spec.argv[0])
        try:
            mtime = (await asyncio.to_thread(binary.stat)).st_mtime_ns
        except OSError:
            return  # not there: the spawn says so
        key = (str(binary), mtime, tuple(sorted(spec.env.items())))
        if key == self._gpu_seen:
            return
        found = await asyncio.to_thread(gpu_seen, binary, spec.env, flavor or self.config.backend,
                                        self._deps.paths.hardware_json)
        if found.seen is False:
            raise SlotStartFailed(f"{self.name}: {found.problem}", slot=self.name)
        if found.seen:
            self._gpu_seen = key

    async def _check_workers(self) -> None:
        """Raise WorkerUnreachable naming every RPC worker that does not accept a connection."""
        self._workers = await workers.check(self.config.rpc, _WORKER_TIMEOUT_S)
        if (down := workers.down_message(self._workers)) is not None:
            raise WorkerUnreachable(f"{self.name}: {down}; it starts again by itself once they answer",
                                    slot=self.name, workers=self._workers)

    def _idle_after(self) -> float:
        """Seconds without a request before the idle check acts (0: never)."""
        if self._keep_alive is None:
            return self.config.idle_timeout_s
        return 0.0 if self._keep_alive < 0 else max(self._keep_alive, 0.001)

    async def _handle_keep_alive(self, seconds: float) -> SlotSnapshot:
        if self._proc is None:
            return self.snapshot()
        self._keep_alive = seconds
        self._arm(UnloadIdle, 0)
        self._arm(IdleCheck, 0)
        if self._gate.active == 0:
            await self._handle_idle_check()
        self._publish()
        return self.snapshot()

    async def _handle_idle_check(self) -> None:
        quiet = time.monotonic() - self._last_used
        if self._keep_alive is not None:  # Ollama's keep_alive: unload after it, no idle step
            if self._keep_alive < 0 or self._gate.active or self._state not in (S.READY, S.IDLE):
                return
            if quiet + 0.001 >= self._keep_alive:
                await self._stop_backend()
            else:
                self._arm(IdleCheck, self._keep_alive - quiet)
            return
        if self._state is S.READY and self._gate.active == 0:
            if quiet + 0.001 >= self.config.idle_timeout_s:
                self._transition(S.IDLE)
                self._arm(UnloadIdle, self._unload_after())
            else:
                self._arm(IdleCheck, self.config.idle_timeout_s - quiet)

    async def _handle_unload_idle(self) -> None:
        if self._state is S.IDLE and self._gate.active == 0:
            await self._stop_backend()

    def _unload_after(self) -> float:
        """Idle seconds before unloading: the slot's own ``unload_after_s``, else its kind's default
        from ``[memory].idle_unload_s`` unless it is pinned; 0 = never."""
        if self.config.unload_after_s > 0 or self.config.pinned:
            return self.config.unload_after_s
        return self._deps.memory.idle_unload_s.get(self._kind, 0.0)

    async def _handle_evict(self, wait_s: float, until: float) -> str:
        if time.monotonic() > until:
            return "late"  # the sender gave up and decided without us
        if self.config.pinned:
            return "pinned"
        if self._proc is None or self._state not in DISPATCHABLE:
            return "not loaded"
        if not self._gate.vacant.is_set():  # requests in flight, or waiting for this slot
            if wait_s <= 0:
                return "busy"
            try:  # never mid-answer: they finish first
                await asyncio.wait_for(self._gate.vacant.wait(), min(wait_s, max(until - time.monotonic(), 0)))
            except TimeoutError:
                return "busy"
            if self._proc is None or self._state not in DISPATCHABLE or not self._gate.vacant.is_set():
                return "busy"
        self._disarm()
        self.log.append("[hal0] unloading to free memory for another slot")
        await self._stop_backend()
        return "unloaded"

    async def _handle_measured(self, proc: BackendProcess, usage: Usage) -> None:
        if proc is not self._proc:
            return  # a measurement of a backend that is gone
        self._memory = usage
        old = self._peak
        gpus = [g for g in (usage.gpu_bytes, old.gpu_bytes if old else None) if g is not None]
        peak = Usage(max(usage.rss_bytes, old.rss_bytes if old else 0), max(gpus) if gpus else None,
                     usage.measured_at)
        if old is None or (peak.rss_bytes, peak.gpu_bytes) != (old.rss_bytes, old.gpu_bytes):
            self._peak = peak
            await self._remember(peak)

    async def _remember(self, usage: Usage) -> None:
        """Keep the figure for the model's next load (the ledger, written off the loop)."""
        if self._deps.ledger is None or self._model is None:
            return
        figure = Measured(usage.rss_bytes, usage.gpu_bytes, usage.measured_at, self.config.backend,
                          self.config.model.context_size, self.config.server.parallel)
        try:
            await asyncio.to_thread(self._deps.ledger.record, self._model.id, figure)
        except OSError as e:
            log.warning("cannot record the memory of %s: %s", self._model.id, e)

    # --- lifecycle steps -----------------------------------------------------------

    def _grace(self) -> float:
        provider = PROVIDERS.get(self.config.provider)
        grace = provider.stop_grace_s if provider else None
        return grace if grace is not None else self._deps.settings.stop_grace_s

    def _require_model(self, ref: str | None) -> str:
        ref = ref or self.configured_model()
        if not ref:
            raise SlotNoModel(f"slot {self.name} has no model: run `hal0 slot swap {self.name} --model ID`",
                              slot=self.name)
        return ref

    def _probe(self, provider: Provider) -> readiness.Probe:
        session, url = self._deps.session, self.base_url

        rpc = self.config.rpc

        async def probe() -> Any:
            ready = await provider.probe(session, url)
            # The split model cannot run without every worker.
            if rpc and ready is Readiness.READY and workers.down_message(
                    await workers.check(rpc, _WORKER_TIMEOUT_S)) is not None:
                return Readiness.DOWN
            return ready
        return probe

    async def _check_fit(self, model: ResolvedModel) -> None:
        """Raise ModelTooLarge if the model cannot fit the memory its backend gives it (only what
        can be estimated: a GGUF on llama-server, with hardware.json present)."""
        if self.config.provider != "llama-server":
            return
        problem = await asyncio.to_thread(too_large, model.path, self.config.model.context_size,
                                          self.config.backend, self._deps.paths.hardware_json)
        if problem is not None:
            raise ModelTooLarge(f"{model.id} needs about {problem['needed'] / 2**30:.1f} GiB at "
                                f"{self.config.model.context_size} tokens of context, and the {self.config.backend} "
                                f"backend has {problem['available'] / 2**30:.1f} GiB; use a smaller model or "
                                "context, or load it anyway with --force", slot=self.name, model=model.id,
                                estimate=problem)

    async def _start(self, ref: str, *, retry: bool = False, force: bool = False, cause: str = "start",
                     budget: bool = True) -> None:
        """offline/error -> starting -> warming -> ready. Raises SlotStartFailed (state: error).

        ``cause`` (start, load, restart, swap, rollback; ``retry``: autorestart) goes out with
        the move to ``starting``.
        Model errors (unknown, missing files) and SlotNoMemory (no room within the memory budget,
        unless not ``budget``) raise before any transition. Cancellation stops the half-started
        backend and leaves the slot offline.
        """
        provider = get_provider(self.config.provider)
        try:  # a TOML edited by hand: the same check as `slot create`
            check_extra_args(self.name, self.config.provider, self.config.server.extra_args,
                             (*self._deps.registry.roots, self._deps.paths.slot_state_dir(self.name)))
        except SlotReservedArg as e:
            raise SlotStartFailed(e.message, slot=self.name) from None
        model = await self._resolve_or_pull(provider, ref)
        if not force and not retry:
            await self._check_fit(model)
        settings = self._deps.providers.get(self.config.provider, ProviderConfig())
        installed = engine_settings(self._deps.paths, self.config.provider)  # from `hal0 backend install`
        settings = replace(settings, python=settings.python or installed.get("python", ""),
                           bin=settings.bin or installed.get("bin", ""))
        spec = await asyncio.to_thread(provider.launch, self.config, model, settings,  # may read the model's head
                                       self._deps.paths.slot_state_dir(self.name))
        if self.config.provider == "llama-server" and self._kind == "chat":  # its --slot-save-path must exist
            await asyncio.to_thread(self._cache_folder().mkdir, parents=True, exist_ok=True)
        need = await asyncio.to_thread(expected_need, self._deps.ledger, self.config, model)
        self._need = need  # counted as held from now on, so that two loads cannot both take the room
        try:
            if budget and self._deps.room is not None:
                await self._deps.room.make_room(self.name, model.id, need)  # raises SlotNoMemory
        except BaseException:
            self._need = None
            raise
        self._model, self._model_ref = model, ref
        self._transition(S.STARTING, f"starting {model.id}", cause="autorestart" if retry else cause)
        sup, cfg = self._deps.supervision, self._deps.settings
        try:
            if self.config.rpc:
                await self._check_workers()
            await self._check_gpu(spec, settings.flavor)
            if not port_is_free(self.config.port):
                raise SlotPortInUse(f"port {self.config.port} of slot {self.name} is in use by another "
                                    "program", slot=self.name, port=self.config.port)
            self._starts += 1
            try:
                self._proc = await BackendProcess.spawn(
                    spec.argv, spec.env, self.log, self._deps.paths.slot_state_dir(self.name) / "backend.log",
                    cwd=spec.cwd)
            except OSError as e:
                raise SlotStartFailed(f"cannot run {spec.argv[0]}: {e.strerror or e}", slot=self.name) from None
            self._transition(S.WARMING, f"loading {model.id}")
            await readiness.wait_ready(self._probe(provider), self._proc, self.log, slot=self.name,
                                       grace_s=cfg.health_grace_s, backoff_s=sup.probe_backoff_s,
                                       backoff_max_s=sup.probe_backoff_max_s)
            await self._after_ready(model)
        except asyncio.CancelledError:
            await self._discard_process(0)
            self._transition(S.OFFLINE, "start cancelled")
            raise
        except WorkerUnreachable as e:  # not the backend's fault: no backoff, no giving up
            await self._discard_process(self._grace())
            self._last_error = e.message
            self._transition(S.ERROR, e.message)
            self._arm(WorkerCheck, self._worker_interval())
            raise SlotStartFailed(e.message, slot=self.name, model=ref, workers=self._workers) from None
        except Hal0Error as e:
            await self._discard_process(self._grace())
            self._after_failure(e.message, retry=retry)
            raise SlotStartFailed(e.message, slot=self.name, model=ref) from None
        self._loaded_at = time.time()
        self._transition(S.READY, "")
        self._last_used = time.monotonic()
        assert self._tg is not None
        self._tg.create_task(self._supervise(provider, self._proc))
        if self._deps.memory.measure_interval_s > 0:
            self._tg.create_task(self._watch_memory(self._proc))
        self._arm(IdleCheck, self.config.idle_timeout_s)

    async def _after_ready(self, model: ResolvedModel) -> None:
        """Restore the saved prompt cache and take the first measurement (still ``warming``)."""
        assert self._proc is not None
        if self._keeps_prompt_cache():
            n = await prompt_cache.restore(self._deps.session, self.base_url, self._cache_folder(), model.id)
            if n:
                self.log.append(f"[hal0] restored {n} cached prompt tokens of {model.id}")
        self._memory = self._peak = None
        usage = await asyncio.to_thread(measure, self._proc.pid)
        if usage is not None:
            await self._handle_measured(self._proc, usage)

    async def _watch_memory(self, proc: BackendProcess) -> None:
        """While ``proc`` lives: measure it every ``measure_interval_s`` and tell the owner."""
        interval = self._deps.memory.measure_interval_s
        while not proc.exited.done():
            done, _ = await asyncio.wait({proc.exited}, timeout=interval)
            if done or proc is not self._proc:
                return
            usage = await asyncio.to_thread(measure, proc.pid)
            if usage is not None and proc is self._proc:
                self.send_nowait(MemoryMeasured(proc, usage))

    def _keeps_prompt_cache(self) -> bool:
        return self._deps.memory.prompt_cache and self.config.provider == "llama-server" and self._kind == "chat"

    def _cache_folder(self) -> Path:
        return self._deps.paths.slot_state_dir(self.name) / prompt_cache.FOLDER

    async def _resolve_or_pull(self, provider: Provider, ref: str) -> ResolvedModel:
        """The model ``ref`` names; a catalogue model not on disk is pulled first (``pulling``).

        Raises what resolution raises (the slot untouched), or SlotStartFailed when the pull
        fails (state ``error``, with the command to retry). Cancelling cancels the pull; its
        partial files stay for the next try.
        """
        try:
            return provider.resolve(ref, self._deps.registry)
        except ModelNotFound:
            if self._deps.pulls is None or await asyncio.to_thread(self._deps.pulls.catalog_entry, ref) is None:
                raise
        self._pull = await self._deps.pulls.start(ref)
        self._transition(S.PULLING, f"pulling {ref}")
        try:
            await asyncio.shield(self._pull.result)
        except asyncio.CancelledError:
            self._deps.pulls.cancel(self._pull.id)
            self._transition(S.OFFLINE, "pull cancelled")
            raise
        except Hal0Error as e:
            reason = f"pulling {ref} failed: {e.message}; `hal0 slot load {self.name}` tries again"
            self._after_failure(reason, retry=False)
            raise SlotStartFailed(reason, slot=self.name, model=ref, pull=e.code) from None
        finally:
            self._pull = None
        return provider.resolve(ref, self._deps.registry)

    async def _supervise(self, provider: Provider, proc: BackendProcess) -> None:
        """While ``proc`` is the slot's backend: tell the owner when it exits or stops answering."""
        cfg = self._deps.settings
        reason = await readiness.watch(self._probe(provider), proc, interval_s=cfg.liveness_interval_s,
                                       failures=cfg.liveness_failures)
        if self.config.rpc and (down := workers.down_message(await workers.check(self.config.rpc,
                                                                                   _WORKER_TIMEOUT_S))):
            reason = f"{down}: {reason}"  # the worker is why; the owner restarts once it answers
        if proc is self._proc:
            self.send_nowait(BackendLost(proc, reason))

    async def _discard_process(self, grace: float) -> None:
        self._need = self._memory = self._peak = None  # holds nothing once stopped (and no room was kept)
        if self._proc is not None:
            proc, self._proc, self._keep_alive = self._proc, None, None
            await proc.stop(grace)

    async def _stop_backend(self) -> None:
        """ready/serving/idle -> unloading -> offline, after in-flight requests drain; error -> offline."""
        if self._proc is None:
            if self._state is S.ERROR:
                self._transition(S.OFFLINE, "")
            return
        self._transition(S.UNLOADING, f"stopping {self._model.id if self._model else ''}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gate.drained.wait(), self._deps.settings.stop_grace_s)
        if self._keeps_prompt_cache() and self._model is not None and self._gate.active == 0:
            await self._save_prompt_cache(self._model.id)
        await self._discard_process(self._grace())
        self._model = None
        self._transition(S.OFFLINE, "")

    async def _save_prompt_cache(self, model_id: str) -> None:
        """Keep the work of a backend about to stop (bounded: the oldest caches go first)."""
        n = await prompt_cache.save(self._deps.session, self.base_url, self._cache_folder(), model_id)
        if n:
            self.log.append(f"[hal0] saved {n} cached prompt tokens of {model_id}")
            limit = parse_size(self._deps.memory.prompt_cache_max)
            await asyncio.to_thread(prompt_cache.prune, self._deps.paths.state_dir / "slots", limit)

    def _after_failure(self, reason: str, *, log_lines: bool = False, retry: bool, lost: str = "") -> None:
        """Enter ``error``; with ``retry`` (a live backend died, or a restart failed) schedule
        the next restart under the restart policy's backoff. ``lost``: why a live backend was
        given up on (unresponsive, exited), published with the move."""
        delay = self._policy.record(time.monotonic())
        lines = self.log.tail(20)
        self._last_error = reason
        message = f"{reason}; last output: " + " | ".join(lines[-5:]) if log_lines else reason
        if delay is None:
            message += f" ({self._policy.given_up()}; `hal0 slot restart {self.name}` tries again)"
        self._transition(S.ERROR, message, log=lines, **({"lost": lost} if lost else {}))
        if retry and delay is not None:
            self._arm(Autorestart, delay)

    async def _set_override(self, model: str | None) -> None:
        await asyncio.to_thread(write_override, self._deps.paths, self.name, model)
        self._override = model
        self._publish()

    async def _reconfigure(self, config: SlotConfig) -> None:
        """Make ``config`` the slot's, written to its TOML first (off the loop)."""
        await asyncio.to_thread(atomic_write, self._deps.paths.slot_toml(self.name), render_slot_toml(config))
        self.config = config
        self._kind = slot_kind(config.name, config.provider, config.server.extra_args)
        self._publish()

    # --- timers --------------------------------------------------------------------

    def _arm(self, kind: type[Command], delay: float) -> None:
        """(Re)start the timer that sends ``kind()`` to the owner after ``delay`` s. 0 = never.

        A loop timer, not a task: re-arming it on every finished request costs next to nothing.
        """
        if (old := self._timers.pop(kind, None)) is not None:
            old.cancel()
        if delay > 0 and self._tg is not None:
            self._timers[kind] = asyncio.get_running_loop().call_later(delay, self._fire, kind)

    def _fire(self, kind: type[Command]) -> None:
        self._timers.pop(kind, None)
        self.send_nowait(kind())

    def _disarm(self) -> None:
        for kind in (IdleCheck, UnloadIdle, Autorestart, WorkerCheck):
            self._arm(kind, 0)

    # --- the one state change --------------------------------------------------------

    def _transition(self, new: SlotState, message: str | None = None, **detail: Any) -> None:
        """Validate, record, persist, publish and wake waiters. Raises SlotIllegalTransition."""
        if not is_legal(self._state, new):
            raise SlotIllegalTransition(f"slot {self.name}: {self._state} -> {new} is not a legal move",
                                        slot=self.name, src=str(self._state), dst=str(new))
        prev, self._state = self._state, new
        if message is not None:
            self._message = message
        self._updated_at = time.time()
        hot = S.SERVING in (prev, new)
        self._writer.mark(hot=hot)
        if not hot or self._deps.changes.wants_hot():  # a flip's snapshot only for someone who reads it
            self._publish(prev=prev, hot=hot, detail=detail)
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if self._movers:
            movers, self._movers = self._movers, []
            for fut in movers:
                if not fut.done():
                    fut.set_result(None)

    def _publish(self, *, prev: SlotState | None = None, hot: bool = False,
                 detail: dict[str, Any] | None = None) -> None:
        self._deps.changes.publish(SlotChanged(self.name, self.snapshot(), prev, hot, detail or {}))

    def _state_json(self) -> dict[str, Any]:
        proc = self._proc
        return {"name": self.name, "state": str(self._state), "model_id": self._model.id if self._model else None,
                "port": self.config.port, "pid": proc.pid if proc else None, "updated_at": self._updated_at,
                "message": self._message,
                "extra": {"pid_start": proc.start_time if proc else None, "model_ref": self._model_ref,
                          "last_error": self._last_error}}
