"""One slot: its owner task, its backend process, its lifecycle (see DESIGN.md).

Callers never change a slot directly: the public coroutines send a command to
the owner task and await its answer. The owner runs one operation at a time;
an operation that takes long (a start, a swap) runs as the owner's child task so
that ``unload``, ``disable`` and ``shutdown`` can cancel it, while any other
command waits its turn. ``acquire_nowait``/``release_nowait`` are the one
exception: synchronous (atomic on the event loop) in-flight accounting that only
moves between ``ready``/``idle`` and ``serving``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from hal0.atomic import atomic_write
from hal0.backends import engine_settings
from hal0.config.defaults import render_slot_toml
from hal0.config.schema import ProviderConfig, SlotConfig, SlotsConfig
from hal0.dispatch.admission import Admission
from hal0.errors import (
    Hal0Error,
    SlotCancelled,
    SlotDisabled,
    SlotIllegalTransition,
    SlotNoModel,
    SlotPortInUse,
    SlotStartFailed,
    SlotStateError,
    SlotSwapFailed,
)
from hal0.events import EventBus
from hal0.models.registry import Registry, ResolvedModel
from hal0.paths import Paths
from hal0.providers import PROVIDERS, Provider, Readiness, get_provider
from hal0.slots.overrides import read_override, write_override
from hal0.slots.ports import port_is_free
from hal0.slots.process import BackendProcess, LogRing
from hal0.slots.state import DISPATCHABLE, SlotSnapshot, SlotState, is_legal

__all__ = ["Slot", "SlotDeps", "Supervision"]

log = logging.getLogger("hal0.slots")
S = SlotState
INTERRUPTS = frozenset({"unload", "disable", "shutdown"})
HOT_PERSIST_S = 1.0


@dataclass(frozen=True)
class Supervision:
    """Restart policy after an unexpected exit (tests shrink the delays)."""

    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    max_failures: int = 5
    window_s: float = 600.0
    probe_backoff_s: float = 0.5
    probe_backoff_max_s: float = 10.0


@dataclass(frozen=True)
class SlotDeps:
    """What every slot shares: injected, never global."""

    paths: Paths
    settings: SlotsConfig
    events: EventBus
    registry: Registry
    providers: dict[str, ProviderConfig]
    session: aiohttp.ClientSession
    supervision: Supervision = field(default_factory=Supervision)
    on_change: Callable[[], None] = lambda: None  # called when what a slot serves may have changed


@dataclass
class _Cmd:
    kind: str
    model: str | None = None
    payload: Any = None
    fut: asyncio.Future[Any] | None = None


class Slot:
    def __init__(self, config: SlotConfig, deps: SlotDeps) -> None:
        self.config = config
        self.name = config.name
        self._deps = deps
        self.log = LogRing()
        self._queue: asyncio.Queue[_Cmd] = asyncio.Queue()
        self._state = S.OFFLINE
        self._message = ""
        self._model: ResolvedModel | None = None
        self._model_ref: str | None = None
        self._override = read_override(deps.paths, config.name)  # slots/<name>.env, read once
        self._proc: BackendProcess | None = None
        self._updated_at = time.time()
        self._changed: asyncio.Event | None = None  # made by the first waiter, set by the next move
        self._inflight = 0
        self.admission = Admission(config.name, config.max_inflight, config.max_queue)  # the dispatcher's gate
        self._drained = asyncio.Event()
        self._drained.set()
        self._last_used = time.monotonic()
        self._failures: deque[float] = deque()
        self._starts = 0  # backends spawned since hal0 started
        self._tg: asyncio.TaskGroup | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._persist_task: asyncio.Task[None] | None = None
        self._persist_dirty = False
        self._persist_waiting = False
        self._persist_urgent = False  # a move that must not wait out the hot delay is pending

    # --- reading -----------------------------------------------------------------

    @property
    def state(self) -> SlotState:
        return self._state

    def snapshot(self) -> SlotSnapshot:
        return SlotSnapshot(
            name=self.name, state=self._state, provider=self.config.provider, backend=self.config.backend,
            port=self.config.port, enabled=self.config.enabled,
            model=self._model.id if self._model else None,
            pid=self._proc.pid if self._proc else None, message=self._message,
            inflight=self._inflight, queued=self.admission.queued, updated_at=self._updated_at,
            starts=self._starts, extra={"model_ref": self._model_ref} if self._model_ref else {})

    def served_models(self) -> frozenset[str]:
        """The id and the reference of the model a live backend serves (cheap: read per request)."""
        if self._proc is None or self._model is None:
            return frozenset()
        return frozenset({self._model.id, self._model_ref or self._model.id})

    def configured_model(self) -> str | None:
        """The model a start uses: the swap override, else ``[model].default``."""
        return self._override or self.config.model.default or None

    def _set_override(self, model: str | None) -> None:
        write_override(self._deps.paths, self.name, model)
        self._override = model
        self._deps.on_change()

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

    async def _send(self, kind: str, model: str | None = None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Cmd(kind, model, fut=fut))
        return await fut

    def send_nowait(self, kind: str, model: str | None = None, payload: Any = None) -> None:
        """Queue a command nobody waits for (autostart, timers, exit notices)."""
        self._queue.put_nowait(_Cmd(kind, model, payload))

    async def ensure_ready(self) -> SlotSnapshot:
        """Start the slot if it is offline (single-flight); returns once dispatchable.

        Raises SlotDisabled, SlotStateError (slot in error), SlotNoModel or SlotStartFailed.
        """
        if self._state in DISPATCHABLE:
            return self.snapshot()
        result: SlotSnapshot = await self._send("ensure_ready")
        return result

    async def load(self, model: str | None = None) -> SlotSnapshot:
        """Operator load: start (clearing an error), or swap if ``model`` differs."""
        result: SlotSnapshot = await self._send("load", model)
        return result

    async def unload(self) -> SlotSnapshot:
        result: SlotSnapshot = await self._send("unload")
        return result

    async def restart(self) -> SlotSnapshot:
        result: SlotSnapshot = await self._send("restart")
        return result

    async def swap(self, model: str) -> SlotSnapshot:
        """Load ``model`` in place of the current one; rolls back on failure (SlotSwapFailed)."""
        result: SlotSnapshot = await self._send("swap", model)
        return result

    async def enable(self) -> SlotSnapshot:
        result: SlotSnapshot = await self._send("enable")
        return result

    async def disable(self) -> SlotSnapshot:
        result: SlotSnapshot = await self._send("disable")
        return result

    async def set_backend(self, backend: str) -> SlotSnapshot:
        """Stop the slot and make ``backend`` its backend (written to its TOML)."""
        result: SlotSnapshot = await self._send("set_backend", backend)
        return result

    async def shutdown(self) -> None:
        """Stop the backend and end the owner task."""
        await self._send("shutdown")

    # --- in-flight accounting (synchronous, see module docstring) -----------------

    def acquire_nowait(self) -> bool:
        """Count one request in flight if the slot is dispatchable; False otherwise."""
        if self._state not in DISPATCHABLE:
            return False
        self._inflight += 1
        self._drained.clear()
        if self._state is not S.SERVING:
            self._transition(S.SERVING)
        return True

    def release_nowait(self) -> None:
        self._inflight -= 1
        self._last_used = time.monotonic()
        if self._inflight == 0:
            self._drained.set()
            if self._state is S.SERVING:
                self._transition(S.READY)
                if "idle" not in self._timers:  # a pending one re-checks the quiet time when it fires
                    self._arm("idle", self.config.idle_timeout_s)

    # --- the owner ---------------------------------------------------------------

    async def run(self) -> None:
        """The owner task: handles commands until ``shutdown``; always reaps the backend."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self._persist()
                try:
                    await self._loop(tg)
                finally:
                    for timer in self._timers.values():
                        timer.cancel()
                    if self._proc is not None:
                        await self._proc.stop(self._grace())
        finally:
            self._tg = None

    async def _loop(self, tg: asyncio.TaskGroup) -> None:
        deferred: deque[_Cmd] = deque()
        op: asyncio.Task[tuple[bool, Any]] | None = None
        op_cmd: _Cmd | None = None
        getter: asyncio.Task[_Cmd] | None = None
        try:
            while True:
                if op is None and deferred:
                    cmd = deferred.popleft()
                else:
                    getter = getter or tg.create_task(self._queue.get())
                    waiting: set[asyncio.Future[Any]] = {getter} if op is None else {getter, op}
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if op is not None and op in done:
                        self._answer(op_cmd, op)
                        op = op_cmd = None
                        continue
                    cmd, getter = getter.result(), None
                    if op is not None:
                        if cmd.kind not in INTERRUPTS:
                            deferred.append(cmd)
                            continue
                        op.cancel()
                        with contextlib.suppress(BaseException):
                            await op
                        self._answer(op_cmd, op)
                        op = op_cmd = None
                if cmd.kind == "shutdown":
                    await self._stop_backend()
                    for waiting_cmd in deferred:
                        self._fail(waiting_cmd, SlotCancelled(f"slot {self.name} is shutting down"))
                    if cmd.fut and not cmd.fut.done():
                        cmd.fut.set_result(None)
                    return
                op, op_cmd = tg.create_task(self._dispatch(cmd)), cmd
        finally:
            if getter is not None:
                getter.cancel()
            if op is not None:
                op.cancel()
                with contextlib.suppress(BaseException):
                    await op

    async def _dispatch(self, cmd: _Cmd) -> tuple[bool, Any]:
        """Run one handler; its error is returned, not raised (it must not end the TaskGroup)."""
        handler: Callable[[_Cmd], Any] = getattr(self, f"_handle_{cmd.kind}")
        try:
            return True, await handler(cmd)
        except Exception as e:
            return False, e

    def _answer(self, cmd: _Cmd | None, op: asyncio.Task[tuple[bool, Any]]) -> None:
        if cmd is None:
            return
        if op.cancelled():
            self._fail(cmd, SlotCancelled(f"{cmd.kind} of slot {self.name} was cancelled by another command"))
            return
        ok, value = op.result()
        if not ok:
            self._fail(cmd, value)
        elif cmd.fut is not None and not cmd.fut.done():
            cmd.fut.set_result(value)

    def _fail(self, cmd: _Cmd, exc: BaseException) -> None:
        if cmd.fut is not None:
            if not cmd.fut.done():
                cmd.fut.set_exception(exc)
        elif not isinstance(exc, Hal0Error):
            log.error("slot %s: %s failed", self.name, cmd.kind, exc_info=exc)
        else:
            log.warning("slot %s: %s: %s", self.name, cmd.kind, exc)

    # --- handlers ----------------------------------------------------------------

    def _require_enabled(self) -> None:
        if not self.config.enabled:
            raise SlotDisabled(f"slot {self.name} is disabled; enable it with `hal0 slot enable {self.name}`",
                               slot=self.name)

    async def _handle_ensure_ready(self, cmd: _Cmd) -> SlotSnapshot:
        self._require_enabled()
        if self._state in DISPATCHABLE:
            return self.snapshot()
        if self._state is S.ERROR:
            raise SlotStateError(f"slot {self.name} is in error: {self._message}", slot=self.name,
                                 state="error")
        await self._start(self._require_model(None))
        return self.snapshot()

    async def _handle_autostart(self, cmd: _Cmd) -> SlotSnapshot:
        return await self._handle_ensure_ready(cmd)

    async def _handle_load(self, cmd: _Cmd) -> SlotSnapshot:
        self._require_enabled()
        if cmd.model is not None and self._proc is not None and cmd.model != self._model_ref:
            return await self._handle_swap(cmd)
        if self._state in DISPATCHABLE:
            return self.snapshot()
        self._failures.clear()
        await self._start(self._require_model(cmd.model))
        if cmd.model is not None:
            self._set_override(cmd.model)  # only a model that loaded becomes the slot's model
        return self.snapshot()

    async def _handle_unload(self, cmd: _Cmd) -> SlotSnapshot:
        self._disarm()
        await self._stop_backend()
        return self.snapshot()

    async def _handle_restart(self, cmd: _Cmd) -> SlotSnapshot:
        self._require_enabled()
        ref = self._require_model(None)
        await self._stop_backend()
        self._failures.clear()
        await self._start(ref)
        return self.snapshot()

    async def _handle_swap(self, cmd: _Cmd) -> SlotSnapshot:
        assert cmd.model is not None
        self._require_enabled()
        provider = get_provider(self.config.provider)
        provider.resolve(cmd.model, self._deps.registry)  # unknown model: the slot is untouched
        previous = self._model_ref if self._proc is not None else None
        old_override = self._override
        self._set_override(cmd.model)
        await self._stop_backend()
        try:
            await self._start(cmd.model)
            return self.snapshot()
        except SlotStartFailed as e:
            reason = e.message
            self._set_override(old_override)
        if previous is None:
            raise SlotSwapFailed(f"swap of {self.name} to {cmd.model} failed: {reason}",
                                 slot=self.name, model=cmd.model, reason=reason)
        self.log.append(f"[hal0] swap to {cmd.model} failed; rolling back to {previous}")
        try:
            await self._start(previous)
        except SlotStartFailed as e:
            raise SlotSwapFailed(f"swap of {self.name} to {cmd.model} failed ({reason}) and rolling back "
                                 f"to {previous} failed too: {e.message}", slot=self.name,
                                 model=cmd.model, reason=reason, rolled_back=False) from None
        raise SlotSwapFailed(f"swap of {self.name} to {cmd.model} failed, rolled back to {previous}: {reason}",
                             slot=self.name, model=cmd.model, reason=reason, rolled_back=True,
                             running=previous)

    async def _handle_enable(self, cmd: _Cmd) -> SlotSnapshot:
        self._set_enabled(True)
        return self.snapshot()

    async def _handle_disable(self, cmd: _Cmd) -> SlotSnapshot:
        self._disarm()
        await self._stop_backend()
        self._set_enabled(False)
        return self.snapshot()

    async def _handle_set_backend(self, cmd: _Cmd) -> SlotSnapshot:
        if cmd.model != self.config.backend:
            self._disarm()
            await self._stop_backend()
            self.config = replace(self.config, backend=cmd.model)  # type: ignore[arg-type]
            atomic_write(self._deps.paths.slot_toml(self.name), render_slot_toml(self.config))
            self._publish()
        return self.snapshot()

    async def _handle_exited(self, cmd: _Cmd) -> None:
        proc: BackendProcess = cmd.payload
        if proc is not self._proc:
            return  # a process we already replaced or stopped
        code = await proc.wait()
        self._proc = None
        self._disarm()
        self._after_failure(f"backend exited unexpectedly with code {code}", proc, retry=True)

    async def _handle_autorestart(self, cmd: _Cmd) -> None:
        if self._state is not S.ERROR or not self.config.enabled:
            return
        with contextlib.suppress(Hal0Error):  # _start recorded it and, within the limit, scheduled a retry
            await self._start(self._require_model(None), retry=True)

    async def _handle_idle(self, cmd: _Cmd) -> None:
        quiet = time.monotonic() - self._last_used
        if self._state is S.READY and self._inflight == 0:
            if quiet + 0.001 >= self.config.idle_timeout_s:
                self._transition(S.IDLE)
                self._arm("unload", self.config.unload_after_s)
            else:
                self._arm("idle", self.config.idle_timeout_s - quiet)

    async def _handle_unload_idle(self, cmd: _Cmd) -> None:
        if self._state is S.IDLE and self._inflight == 0:
            await self._stop_backend()

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

    async def _start(self, ref: str, *, retry: bool = False) -> None:
        """offline/error -> starting -> warming -> ready. Raises SlotStartFailed (state: error).

        Model errors (unknown, missing files) raise before any transition. Cancellation
        stops the half-started backend and leaves the slot offline.
        """
        provider = get_provider(self.config.provider)
        model = provider.resolve(ref, self._deps.registry)
        settings = self._deps.providers.get(self.config.provider, ProviderConfig())
        installed = engine_settings(self._deps.paths, self.config.provider)  # from `hal0 backend install`
        settings = replace(settings, python=settings.python or installed.get("python", ""),
                           bin=settings.bin or installed.get("bin", ""))
        spec = provider.launch(self.config, model, settings, self._deps.paths.slot_state_dir(self.name))
        self._model, self._model_ref = model, ref
        self._transition(S.STARTING, f"starting {model.id}")
        try:
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
            await self._wait_ready(provider, self._proc)
        except asyncio.CancelledError:
            await self._discard_process(0)
            self._transition(S.OFFLINE, "start cancelled")
            raise
        except Hal0Error as e:
            await self._discard_process(self._grace())
            self._after_failure(e.message, None, retry=retry)
            raise SlotStartFailed(e.message, slot=self.name, model=ref) from None
        self._transition(S.READY, "")
        self._last_used = time.monotonic()
        assert self._tg is not None
        self._tg.create_task(self._watch_exit(self._proc))
        self._arm("idle", self.config.idle_timeout_s)

    async def _discard_process(self, grace: float) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            await proc.stop(grace)

    async def _wait_ready(self, provider: Provider, proc: BackendProcess) -> None:
        """Probe with backoff (and at once when the backend prints) until ready or the grace ends."""
        sup = self._deps.supervision
        deadline = time.monotonic() + self._deps.settings.health_grace_s
        delay = sup.probe_backoff_s
        exited = asyncio.ensure_future(proc.wait())
        try:
            while True:
                if await provider.probe(self._deps.session, self.base_url) is Readiness.READY:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SlotStartFailed(
                        f"{self.name} did not become ready within {self._deps.settings.health_grace_s:g}s; "
                        "the backend was killed", slot=self.name, log=self.log.tail(20))
                proc.output.clear()
                printed = asyncio.ensure_future(proc.output.wait())
                pause = asyncio.ensure_future(asyncio.sleep(min(delay * random.uniform(0.8, 1.2), remaining)))
                try:
                    await asyncio.wait({exited, printed, pause}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    printed.cancel()
                    pause.cancel()
                if exited.done():
                    lines = self.log.tail(20)
                    raise SlotStartFailed(
                        f"backend exited with code {exited.result()} while loading: " + " | ".join(lines[-5:]),
                        slot=self.name, exit_code=exited.result(), log=lines)
                delay = min(delay * 2, sup.probe_backoff_max_s)
        finally:
            exited.cancel()

    async def _watch_exit(self, proc: BackendProcess) -> None:
        await proc.wait()
        if proc is self._proc:
            self.send_nowait("exited", payload=proc)

    async def _stop_backend(self) -> None:
        """ready/serving/idle -> unloading -> offline, after in-flight requests drain; error -> offline."""
        if self._proc is None:
            if self._state is S.ERROR:
                self._transition(S.OFFLINE, "")
            return
        self._transition(S.UNLOADING, f"stopping {self._model.id if self._model else ''}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), self._deps.settings.stop_grace_s)
        await self._discard_process(self._grace())
        self._model = None
        self._transition(S.OFFLINE, "")

    def _after_failure(self, reason: str, proc: BackendProcess | None, *, retry: bool) -> None:
        """Enter ``error``; with ``retry`` (a live backend died, or a restart failed) schedule
        the next restart with backoff until ``max_failures`` within ``window_s``."""
        sup = self._deps.supervision
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > sup.window_s:
            self._failures.popleft()
        lines = self.log.tail(20)
        message = reason if not proc else f"{reason}; last output: " + " | ".join(lines[-5:])
        n = len(self._failures)
        if n >= sup.max_failures:
            message += (f" ({n} failures in {sup.window_s / 60:g} min: not restarting; "
                        f"`hal0 slot restart {self.name}` tries again)")
        self._transition(S.ERROR, message, log=lines)
        if retry and n < sup.max_failures:
            self._arm("autorestart", min(sup.backoff_s * 2 ** (n - 1), sup.backoff_max_s))

    def _set_enabled(self, enabled: bool) -> None:
        if self.config.enabled == enabled:
            return
        self.config = replace(self.config, enabled=enabled)
        atomic_write(self._deps.paths.slot_toml(self.name), render_slot_toml(self.config))
        self._publish()

    # --- timers --------------------------------------------------------------------

    def _arm(self, kind: str, delay: float) -> None:
        """(Re)start timer ``kind``: after ``delay`` s the owner gets that command. 0 = never.

        A loop timer, not a task: re-arming it on every finished request costs next to nothing.
        """
        if (old := self._timers.pop(kind, None)) is not None:
            old.cancel()
        if delay > 0 and self._tg is not None:
            command = {"idle": "idle", "unload": "unload_idle"}.get(kind, kind)
            self._timers[kind] = asyncio.get_running_loop().call_later(delay, self._fire, kind, command)

    def _fire(self, kind: str, command: str) -> None:
        self._timers.pop(kind, None)
        self.send_nowait(command)

    def _disarm(self) -> None:
        for kind in ("idle", "unload", "autorestart"):
            self._arm(kind, 0)

    # --- the one state change --------------------------------------------------------

    def _transition(self, new: SlotState, message: str | None = None, **extra: Any) -> None:
        """Validate, record, persist, publish and wake waiters. Raises SlotIllegalTransition."""
        if not is_legal(self._state, new):
            raise SlotIllegalTransition(f"slot {self.name}: {self._state} -> {new} is not a legal move",
                                        slot=self.name, src=str(self._state), dst=str(new))
        prev, self._state = self._state, new
        if message is not None:
            self._message = message
        self._updated_at = time.time()
        hot = S.SERVING in (prev, new)
        self._persist(hot=hot)
        if not hot:
            self._deps.on_change()
        self._publish(prev=str(prev), **extra)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _publish(self, **extra: Any) -> None:
        if not self._deps.events.subscriber_count:
            return  # nobody listens: skip building the snapshot (this runs twice per request)
        self._deps.events.publish("slot.state", {"slot": self.name, **self.snapshot().to_json(), **extra})

    def _persist(self, *, hot: bool = False) -> None:
        """Write state.json atomically, off the event loop, coalescing bursts.

        ``hot`` moves (serving <-> ready/idle, once or twice per request) are written at most
        once per ``HOT_PERSIST_S``; every other move is written at once.
        """
        self._persist_dirty = True
        if not hot:
            self._persist_urgent = True
        pending = self._persist_task is not None and not self._persist_task.done()
        if pending and not hot and self._persist_waiting:
            assert self._persist_task is not None
            self._persist_task.cancel()  # still waiting out the hot delay: write now instead
            pending = False
        if not pending and self._tg is not None:
            self._persist_task = self._tg.create_task(self._persist_loop(HOT_PERSIST_S if hot else 0.0))

    async def _persist_loop(self, delay: float) -> None:
        file = self._deps.paths.slot_state_dir(self.name) / "state.json"
        while True:  # a failed write is logged: it must not end the owner
            if delay:
                self._persist_waiting = True
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._persist_waiting = False
            if not self._persist_dirty:
                return  # nothing new to write
            self._persist_dirty = self._persist_urgent = False
            proc = self._proc
            body = {"name": self.name, "state": str(self._state),
                    "model_id": self._model.id if self._model else None, "port": self.config.port,
                    "pid": proc.pid if proc else None, "updated_at": self._updated_at,
                    "message": self._message,
                    "extra": {"pid_start": proc.start_time if proc else None, "model_ref": self._model_ref}}
            try:
                await asyncio.shield(asyncio.to_thread(atomic_write, file, json.dumps(body, indent=2) + "\n"))
            except OSError as e:
                log.error("slot %s: cannot write %s: %s", self.name, file, e)
            if not self._persist_dirty:
                return
            # Moves made during the write: an urgent one goes out at once, flips wait their turn.
            delay = 0.0 if self._persist_urgent else HOT_PERSIST_S

