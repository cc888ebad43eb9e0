"""Memory and residency: measured memory, the budget with eviction and pinning, the prompt cache
kept across unloads, `hal0 gpu release`. Pure parts on fake /proc trees; the rest over the real
llama-server and the manifest's models."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hal0.config.schema import MemoryConfig
from hal0.config.sizes import parse_size
from hal0.errors import SlotBusy, SlotNoMemory
from hal0.hardware.usage import drm_bytes, measure, parse_fdinfo, parse_nvidia_apps, process_tree, rss_bytes
from hal0.paths import Paths
from hal0.slots import SlotState
from hal0.slots.ledger import MemoryLedger
from hal0.slots.residency import Budget, Need, Resident, budget_from, plan
from tests.helpers.env import HAL0, hal0_env, manifest
from tests.helpers.serve import serving, setup_home
from tests.helpers.slots import llama_bin, slot_config, slot_manager

S = SlotState
MIB = 1 << 20


# --- /proc, fdinfo and nvidia-smi, on fake trees ---------------------------------------------

def _proc(root: Path, pid: int, ppid: int, pgrp: int, rss_kb: int, comm: str = "llama-server",
          fdinfo: dict[str, str] | None = None) -> None:
    d = root / "proc" / str(pid)
    (d / "fdinfo").mkdir(parents=True)
    # A command name with a space and a parenthesis: the fields are counted after the last ")".
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pgrp} {pgrp} 0 -1 4194560 1 0 0 0 5 3 0 0 20 0 4 0\n")
    (d / "status").write_text(f"Name:\t{comm}\nVmPeak:\t  999999 kB\nVmRSS:\t  {rss_kb} kB\nThreads:\t4\n")
    for fd, text in (fdinfo or {}).items():
        (d / "fdinfo" / fd).write_text(text)


# amdgpu before Linux 6.10: drm-memory-<region>; one client open on two descriptors.
AMD_OLD = ("pos:\t0\nflags:\t02100002\nmnt_id:\t25\nino:\t1059\ndrm-driver:\tamdgpu\ndrm-client-id:\t{cid}\n"
           "drm-pdev:\t0000:c3:00.0\npasid:\t32777\ndrm-memory-vram:\t524288 KiB\ndrm-memory-gtt: \t2048 KiB\n"
           "drm-memory-cpu: \t4096 KiB\namd-memory-visible-vram:\t0 KiB\ndrm-engine-gfx:\t1234567 ns\n")
# Linux 6.10+ (amdgpu, xe): drm-total-<region> beside drm-resident/shared/active.
XE_NEW = ("pos:\t0\nflags:\t02100002\ndrm-driver:\txe\ndrm-client-id:\t77\ndrm-pdev:\t0000:00:02.0\n"
          "drm-total-system0:\t59832 KiB\ndrm-shared-system0:\t0\ndrm-active-system0:\t0\n"
          "drm-resident-system0:\t59832 KiB\ndrm-purgeable-system0:\t0\ndrm-total-gtt:\t4 KiB\n"
          "drm-total-stolen:\t0\ndrm-cycles-rcs:\t28257900\n")
# `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` (MiB), recorded on an
# H200 (driver 580.159.04) with one process holding a 3 GiB tensor: "512, 3590\n". Below, that
# format for several processes, one of them on two GPUs, and a row the driver cannot fill ("[N/A]":
# a process in another container, or MIG). NVIDIA's driver gives compute processes no drm-* fdinfo keys.
NVIDIA_RECORDED = "512, 3590\n"
NVIDIA_APPS = "1234, 4416\n2345, 812\n3456, [N/A]\n1234, 100\n"


def test_process_tree_is_the_group_and_the_descendants(tmp_path: Path) -> None:
    _proc(tmp_path, 100, 1, 100, 1000, comm="llama server (x)")
    _proc(tmp_path, 101, 100, 100, 200)  # a child
    _proc(tmp_path, 102, 1, 100, 300)  # reparented, still in the group
    _proc(tmp_path, 103, 101, 103, 50)  # a grandchild in a group of its own
    _proc(tmp_path, 200, 1, 200, 9999)  # someone else
    (tmp_path / "proc" / "self").mkdir()
    assert process_tree(tmp_path, 100) == [100, 101, 102, 103]
    assert rss_bytes(tmp_path, [100, 101, 102, 103, 999]) == (1000 + 200 + 300 + 50) * 1024
    assert process_tree(tmp_path, 555) == []


def test_fdinfo_of_amd_and_intel() -> None:
    assert parse_fdinfo(AMD_OLD.format(cid=5)) == ("5", {"vram": 512 * MIB, "gtt": 2 * MIB, "cpu": 4 * MIB})
    cid, regions = parse_fdinfo(XE_NEW)
    assert cid == "77" and regions == {"system0": 59832 * 1024, "gtt": 4096, "stolen": 0}
    assert parse_fdinfo("pos:\t0\nflags:\t02\n") == (None, {})


def test_drm_bytes_counts_each_client_once_and_leaves_out_host_memory(tmp_path: Path) -> None:
    old = AMD_OLD.format(cid=5)
    _proc(tmp_path, 100, 1, 100, 10, fdinfo={"3": old, "4": old, "5": "pos:\t0\n"})
    _proc(tmp_path, 101, 100, 100, 10, fdinfo={"3": XE_NEW})
    _proc(tmp_path, 102, 100, 100, 10)
    assert drm_bytes(tmp_path, [100]) == 512 * MIB + 2 * MIB
    assert drm_bytes(tmp_path, [100, 101]) == 512 * MIB + 2 * MIB + 59832 * 1024 + 4096
    assert drm_bytes(tmp_path, [102]) is None  # no DRM client: unknown, not 0


def test_nvidia_smi_rows() -> None:
    assert parse_nvidia_apps(NVIDIA_RECORDED) == {512: 3590 * MIB}
    assert parse_nvidia_apps(NVIDIA_APPS) == {1234: 4516 * MIB, 2345: 812 * MIB}
    assert parse_nvidia_apps("") == {}


def test_measure_adds_what_nvidia_smi_says_of_the_tree(tmp_path: Path) -> None:
    _proc(tmp_path, 1234, 1, 1234, 2048)
    _proc(tmp_path, 1235, 1234, 1234, 1024)
    usage = measure(1234, tmp_path, nvidia=lambda: parse_nvidia_apps(NVIDIA_APPS))
    assert usage is not None and (usage.rss_bytes, usage.gpu_bytes) == (3072 * 1024, 4516 * MIB)
    usage = measure(1234, tmp_path, nvidia=lambda: None)
    assert usage is not None and usage.gpu_bytes is None
    assert measure(999, tmp_path, nvidia=lambda: None) is None


def test_measure_of_a_real_process() -> None:
    with subprocess.Popen(["sleep", "30"], start_new_session=True) as p:
        try:
            usage = measure(p.pid)
            assert usage is not None and 100 * 1024 < usage.rss_bytes < 64 * MIB
        finally:
            p.kill()


# --- the eviction decision ---------------------------------------------------------------------

def _r(slot: str, ram: int, *, gpu: int = 0, pinned: bool = False, busy: bool = False, used: float = 0.0,
       evictable: bool = True) -> Resident:
    return Resident(slot, f"{slot}-model", Need(ram, gpu), pinned, busy, evictable, used)


def test_a_load_that_fits_evicts_nothing() -> None:
    p = plan(Need(100), [_r("a", 100)], Budget(ram=200))
    assert (p.fits, p.evict, p.held) == (True, (), Need(100))
    assert plan(Need(10**12), [_r("a", 10**12)], Budget()).fits  # no budget: no limit


def test_least_recently_used_idle_slots_go_first_and_busy_ones_last() -> None:
    residents = [_r("busy", 100, busy=True, used=1.0), _r("new", 100, used=9.0), _r("old", 100, used=2.0),
                 _r("pinned", 100, pinned=True, used=0.0), _r("loading", 100, evictable=False)]
    assert plan(Need(100), residents, Budget(ram=500)).evict == ("old",)
    assert plan(Need(200), residents, Budget(ram=500)).evict == ("old", "new")
    p = plan(Need(300), residents, Budget(ram=500))
    assert (p.fits, p.evict, p.wait) == (True, ("old", "new", "busy"), ("busy",))


def test_what_cannot_fit_evicts_nothing() -> None:
    residents = [_r("pinned", 300, pinned=True), _r("idle", 100)]
    p = plan(Need(300), residents, Budget(ram=500))
    assert (p.fits, p.evict, p.held) == (False, (), Need(400))
    assert not plan(Need(600), [], Budget(ram=500)).fits


def test_only_slots_holding_what_is_short_are_evicted() -> None:
    residents = [_r("cpu", 400, used=0.0), _r("gpu", 10, gpu=800, used=5.0)]
    p = plan(Need(0, 500), residents, Budget(ram=1000, gpu=1000))
    assert p.evict == ("gpu",)  # the older CPU slot holds no GPU memory


def test_budget_from_the_probe_minus_the_reserve() -> None:
    hw = {"memory": {"total_bytes": 64 << 30, "cgroup_limit_bytes": 32 << 30}, "primary_gpu": "0000:03:00.0",
          "gpus": [{"pci": "0000:03:00.0", "vram_bytes": 16 << 30, "gtt_bytes": 32 << 30}]}
    assert budget_from(MemoryConfig(), hw) == Budget(ram=30 << 30, gpu=14 << 30)
    small = {"memory": {"total_bytes": 4 << 30}}  # the reserve takes at most a quarter of a small box
    assert budget_from(MemoryConfig(), small) == Budget(ram=3 << 30)
    assert budget_from(MemoryConfig(), None) == Budget()
    assert budget_from(MemoryConfig(ram_budget="off", gpu_budget="12GiB"), hw) == Budget(None, 12 << 30)
    assert budget_from(MemoryConfig(ram_budget=1000, reserve=0), hw).ram == 1000
    assert (parse_size("1.5GB"), parse_size("512 MiB"), parse_size("7")) == (1_500_000_000, 512 * MIB, 7)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    from hal0.slots.ledger import Measured

    figure = Measured(123, None, 1.0, "cpu", 512, 0)
    MemoryLedger(tmp_path / "memory.json").record("m", figure)
    assert MemoryLedger(tmp_path / "memory.json").get("m") == figure
    MemoryLedger(tmp_path / "memory.json").forget("m")
    assert MemoryLedger(tmp_path / "memory.json").get("m") is None


# --- over the real llama-server ----------------------------------------------------------------

def models() -> dict[str, str]:
    return manifest()["models"]  # type: ignore[no-any-return]


async def _measure_both(paths: Paths) -> tuple[int, int]:
    """Load a (tiny-chat) and b (tiny-embed) once, without a budget: their measured figures."""
    cfgs = [slot_config("a", models()["tiny-chat"]), slot_config("b", models()["tiny-embed"])]
    async with slot_manager(paths, cfgs, llama_bin()) as (mgr, _):
        a, b = await mgr.get("a").ensure_ready(), await mgr.get("b").ensure_ready()
    assert a.memory is not None and b.memory is not None
    return a.memory["rss_bytes"], b.memory["rss_bytes"]


def _budget(ra: int, rb: int) -> MemoryConfig:
    """Room for either model alone, never for both."""
    return MemoryConfig(ram_budget=max(ra, rb) + min(ra, rb) // 2, reserve=0, drain_wait_s=60)


@pytest.mark.backends
@pytest.mark.slow
async def test_loading_the_second_unloads_the_idle_first(paths: Paths) -> None:
    ra, rb = await _measure_both(paths)
    ledger = json.loads((paths.state_dir / "memory.json").read_text())["models"]
    assert ledger["tiny-chat"]["rss_bytes"] >= ra and ledger["tiny-embed"]["rss_bytes"] >= rb
    cfgs = [slot_config("a", models()["tiny-chat"]), slot_config("b", models()["tiny-embed"])]
    async with slot_manager(paths, cfgs, llama_bin(), memory=_budget(ra, rb)) as (mgr, events):
        await mgr.get("a").ensure_ready()
        with events.subscribe() as sub:
            snap = await mgr.get("b").ensure_ready()
            evicted = await _next(sub, "memory.evict")
        assert snap.state is S.READY
        assert evicted.data == {"slot": "a", "for": "b", "outcome": "unloaded"}
        assert mgr.get("a").state is S.OFFLINE


@pytest.mark.backends
@pytest.mark.slow
async def test_a_pinned_slot_stays_and_the_load_fails_with_the_numbers(paths: Paths) -> None:
    ra, rb = await _measure_both(paths)
    cfgs = [slot_config("a", models()["tiny-chat"], pinned=True), slot_config("b", models()["tiny-embed"])]
    async with slot_manager(paths, cfgs, llama_bin(), memory=_budget(ra, rb)) as (mgr, _):
        await mgr.get("a").ensure_ready()
        with pytest.raises(SlotNoMemory) as err:
            await mgr.get("b").ensure_ready()
        assert err.value.status == 503 and err.value.code == "slot.no_memory"
        d = err.value.details
        assert d["slot"] == "b" and d["needs"]["ram_bytes"] >= rb and d["budget"]["ram_bytes"] < ra + rb
        assert [(h["slot"], h["pinned"]) for h in d["held"]] == [("a", True)] and d["held"][0]["ram_bytes"] > 0
        assert "a (" in err.value.message and "pinned" in err.value.message
        assert mgr.get("a").state is S.READY and mgr.get("b").state is S.OFFLINE


@pytest.mark.backends
@pytest.mark.slow
async def test_a_slot_answering_is_not_evicted_mid_answer(paths: Paths) -> None:
    ra, rb = await _measure_both(paths)
    cfgs = [slot_config("a", models()["tiny-chat"]), slot_config("b", models()["tiny-embed"])]
    async with slot_manager(paths, cfgs, llama_bin(), memory=_budget(ra, rb)) as (mgr, events):
        a = mgr.get("a")
        await a.ensure_ready()
        body = {"prompt": "hello", "max_tokens": 64, "ignore_eos": True, "stream": True}
        with events.subscribe() as sub:
            async with a.admit(), aiohttp.ClientSession() as http, \
                    http.post(a.base_url + "/v1/completions", json=body) as r:
                first = await r.content.readline()  # the answer has begun
                load_b = asyncio.create_task(mgr.get("b").ensure_ready())
                waited = await _next(sub, "memory.wait")
                assert waited.data == {"slot": "a", "for": "b"}
                assert a.state is S.SERVING and a.snapshot().pid is not None  # still answering
                rest = await r.read()
            chunks = [ln for ln in (first + rest).decode().splitlines() if ln.startswith("data: ")]
            assert chunks[-1] == "data: [DONE]"
            assert sum(json.loads(c[6:])["choices"][0]["text"] != "" for c in chunks[:-1] if '"choices"' in c) > 1
            snap = await load_b
            assert (await _next(sub, "memory.evict")).data["outcome"] == "unloaded"
        assert snap.state is S.READY and a.state is S.OFFLINE


async def _next(sub: Any, kind: str) -> Any:
    while (e := await asyncio.wait_for(sub.get(), 120)) is not None and e.kind != kind:
        pass
    assert e is not None, f"the bus closed before a {kind} event"
    return e


def _complete(port: int, prompt: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 json.dumps({"prompt": prompt, "max_tokens": 2}).encode())
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.mark.backends
@pytest.mark.slow
async def test_the_prompt_cache_survives_an_unload(paths: Paths) -> None:
    prompt = " ".join(f"word{i}" for i in range(30))  # a long prompt (~200 tokens here), repeated after the reload
    cfg = slot_config("chat", models()["tiny-chat"])
    cfg = replace(cfg, server=replace(cfg.server, parallel=2))  # two server slots: both saved, both restored
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        await slot.ensure_ready()
        async with slot.admit():
            cold = (await asyncio.to_thread(_complete, cfg.port, prompt))["timings"]
        assert cold["cache_n"] == 0 and cold["prompt_n"] > 100
        await slot.unload()
        saved = list((paths.slot_state_dir("chat") / "prompt-cache").glob("tiny-chat.slot*.bin"))
        assert saved and any("saved" in line for line in slot.log.tail(20))
        await slot.ensure_ready()
        assert any("restored" in line for line in slot.log.tail(20))
        async with slot.admit():
            warm = (await asyncio.to_thread(_complete, cfg.port, prompt))["timings"]
        assert warm["cache_n"] >= cold["prompt_n"] - 1 and warm["prompt_n"] <= 1
        await mgr.forget_model("tiny-chat")  # removing the model removes its caches
        assert not list((paths.slot_state_dir("chat") / "prompt-cache").glob("tiny-chat.*"))


# --- through hal0 serve ------------------------------------------------------------------------

@pytest.mark.backends
@pytest.mark.slow
def test_gemma_memory_is_measured_and_shown(tmp_path: Path) -> None:
    gemma = models()["gemma3-270m"]
    setup_home(tmp_path, manifest()["llama_server"]["bin"], gemma)
    with serving(tmp_path) as srv:
        token = (tmp_path / "etc/admin.token").read_text().strip()
        srv.load("primary", token)
        status, st = srv.get("/api/status", token)
        assert status == 200
        primary = next(s for s in st["slots"] if s["name"] == "primary")
        size = Path(gemma).stat().st_size
        rss = primary["memory"]["rss_bytes"]
        assert size // 2 < rss < size + 1024 * MIB, (rss, size)  # the weights are resident, little else
        assert primary["memory"]["gpu_bytes"] is None  # on the CPU no driver accounts anything
        assert st["memory"]["held"]["ram_bytes"] == rss and st["memory"]["slots"][0]["slot"] == "primary"
        out = subprocess.run([*HAL0, "slot", "list"], env=hal0_env(tmp_path), capture_output=True, text=True,
                             check=True).stdout
        row = next(line for line in out.splitlines() if line.startswith("primary"))
        assert "MEMORY" in out and re.search(r" \d+ MiB ", row), out  # measured again since: the figure may move
        out = subprocess.run([*HAL0, "status"], env=hal0_env(tmp_path), capture_output=True, text=True,
                             check=True).stdout
        assert re.search(r"^RAM: +\d+\.\d\d GiB held by slots, budget \d+\.\d\d GiB$", out, re.M), out


@pytest.mark.backends
@pytest.mark.slow
def test_gpu_release_unloads_idle_unpinned_and_leaves_pinned_and_busy(tmp_path: Path) -> None:
    tiny = models()["tiny-chat"]
    setup_home(tmp_path, manifest()["llama_server"]["bin"], tiny, also={"embed": models()["tiny-embed"]})
    toml = tmp_path / "etc/slots/primary.toml"
    toml.write_text(toml.read_text().replace("pinned = false", "pinned = true"))
    with serving(tmp_path) as srv:
        token = (tmp_path / "etc/admin.token").read_text().strip()
        gemma = models()["gemma3-270m"]  # slow enough on the CPU to be still answering during the release
        status, _ = srv.post("/api/slots", token, {"name": "extra", "model": gemma, "backend": "cpu",
                                                    "server": {"threads": 1}})
        assert status == 201
        for name in ("primary", "embed", "extra"):
            srv.load(name, token)
        req = urllib.request.Request(srv.url + "/v1/completions", json.dumps(
            {"model": "extra", "prompt": "hi", "max_tokens": 300, "ignore_eos": True, "stream": True}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as stream:
            assert stream.readline().startswith(b"data: ")  # extra is answering, and we do not finish reading
            done = subprocess.run([*HAL0, "gpu", "release", "--json"], env=hal0_env(tmp_path),
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            out = json.loads(done.stdout)
            assert out["released"] == ["embed"]
            assert sorted(out["kept"], key=lambda k: k["slot"]) == [
                {"slot": "extra", "reason": "busy"}, {"slot": "primary", "reason": "pinned"}]
            assert stream.read().rstrip().endswith(b"data: [DONE]")  # the answer was not cut
        states = {s["name"]: s["state"] for s in srv.get("/api/slots", token)[1]["slots"]}
        assert states["embed"] == "offline" and states["primary"] == "ready" and states["extra"] == "ready"
        subprocess.run([*HAL0, "slot", "create", "pin2", "--model", tiny, "--pinned", "--parallel", "2", "--disabled"],
                       env=hal0_env(tmp_path), check=True, capture_output=True)
        pin2 = srv.get("/api/slots/pin2", token)[1]
        assert pin2["pinned"] is True and "parallel = 2" in (tmp_path / "etc/slots/pin2.toml").read_text()


def test_memory_config_is_validated(paths: Paths) -> None:
    from hal0.config.load import load_config
    from hal0.errors import ConfigInvalid

    paths.hal0_toml.parent.mkdir(parents=True, exist_ok=True)
    paths.hal0_toml.write_text('[memory]\nram_budget = 12884901888\ngpu_budget = "12GiB"\n'
                               '[memory.idle_unload_s]\nchat = 600\n"audio.speech" = 60\n')
    mem = load_config(paths).memory
    assert (mem.ram_budget, mem.gpu_budget, mem.idle_unload_s) == (12884901888, "12GiB",
                                                                    {"chat": 600.0, "audio.speech": 60.0})
    for bad, key in (('ram_budget = "lots"', "memory.ram_budget"), ("gpu_budget = true", "memory.gpu_budget"),
                     ("[memory.idle_unload_s]\nimage = 5", "memory.idle_unload_s.image")):
        paths.hal0_toml.write_text(f"[memory]\n{bad}\n")
        with pytest.raises(ConfigInvalid) as e:
            load_config(paths)
        assert e.value.details["key"] == key


@pytest.mark.backends
@pytest.mark.slow
async def test_idle_unload_by_kind_spares_pinned_slots(paths: Paths) -> None:
    """A slot with unload_after_s = 0 takes its kind's [memory].idle_unload_s; a pinned one keeps its model."""
    mem = MemoryConfig(idle_unload_s={"chat": 0.2})
    cfgs = [slot_config("a", models()["tiny-chat"], idle_timeout_s=0.1),
            slot_config("p", models()["tiny-chat"], idle_timeout_s=0.1, pinned=True)]
    async with slot_manager(paths, cfgs, llama_bin(), memory=mem) as (mgr, _):
        a, p = mgr.get("a"), mgr.get("p")
        await a.ensure_ready()
        await p.ensure_ready()
        assert await a.wait_state(S.OFFLINE, timeout=30) is S.OFFLINE
        assert await p.wait_state(S.IDLE, timeout=30) is S.IDLE
        assert p.snapshot().pid is not None and p.snapshot().pinned


@pytest.mark.backends
@pytest.mark.slow
async def test_parallel_decoding_sets_the_in_flight_cap(paths: Paths) -> None:
    cfg = slot_config("chat", models()["tiny-chat"], max_inflight=16)
    cfg = replace(cfg, server=replace(cfg.server, parallel=2))
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        await slot.ensure_ready()
        async with aiohttp.ClientSession() as http, http.get(slot.base_url + "/slots") as r:
            assert len(await r.json()) == 2  # llama-server runs two sequences at once
        async with slot.admit(), slot.admit():
            third = asyncio.create_task(slot.admit().__aenter__())
            await asyncio.sleep(0)  # one turn of the loop: the third request reaches the gate and waits
            assert (slot.snapshot().inflight, slot.snapshot().queued) == (2, 1)
        await third  # a place was handed over
        assert slot.snapshot().inflight == 1
        await slot.admit().__aexit__(None, None, None)


@pytest.mark.backends
@pytest.mark.slow
async def test_an_embedding_slot_forwards_all_it_admits_and_llama_server_queues_them(paths: Paths) -> None:
    """Embeddings take milliseconds and llama-server batches what it has queued: the slot sends
    every request it admits (max_inflight + max_queue) at once instead of holding some back until
    earlier answers were relayed (on a GPU that left llama-server short of work), and refuses the
    next with 429 as before."""
    cfg = slot_config("embed", models()["all-minilm-l6-v2"], max_inflight=2, max_queue=3)
    async with slot_manager(paths, [cfg], llama_bin()) as (mgr, _):
        slot = mgr.get("embed")
        await slot.ensure_ready()
        async with contextlib.AsyncExitStack() as held:
            for _ in range(5):
                await asyncio.wait_for(held.enter_async_context(slot.admit()), 5)  # none of these waits
            assert (slot.snapshot().inflight, slot.snapshot().queued) == (5, 0)
            with pytest.raises(SlotBusy):
                await slot.admit().__aenter__()
    # a chat slot forwards max_inflight and queues the rest in hal0
    chat = slot_config("chat", models()["tiny-chat"], max_inflight=2, max_queue=3)
    async with slot_manager(paths, [chat], llama_bin()) as (mgr, _):
        slot = mgr.get("chat")
        await slot.ensure_ready()
        async with slot.admit(), slot.admit():
            third = asyncio.create_task(slot.admit().__aenter__())
            await asyncio.sleep(0)  # one turn of the loop: it reaches the gate and waits
            assert (slot.snapshot().inflight, slot.snapshot().queued) == (2, 1)
        await third
        await slot.admit().__aexit__(None, None, None)


def test_gpu_used_by_everyone(tmp_path: Path) -> None:
    from hal0.hardware.usage import gpu_used, parse_nvidia_used
    from hal0.slots.residency import outside_share

    dgpu = tmp_path / "sys/bus/pci/devices/0000:03:00.0"
    dgpu.mkdir(parents=True)
    for name, value in (("mem_info_vram_used", 6 << 30), ("mem_info_vram_total", 16 << 30),
                        ("mem_info_gtt_used", 1 << 30), ("mem_info_gtt_total", 32 << 30)):
        (dgpu / name).write_text(f"{value}\n")
    assert gpu_used("0000:03:00.0", tmp_path, nvidia=lambda: None) == (6 << 30, 16 << 30)  # GTT is not the card's
    apu = tmp_path / "sys/bus/pci/devices/0000:c3:00.0"
    apu.mkdir(parents=True)
    for name, value in (("mem_info_vram_used", 256 << 20), ("mem_info_vram_total", 512 << 20),
                        ("mem_info_gtt_used", 40 << 30), ("mem_info_gtt_total", 96 << 30)):
        (apu / name).write_text(f"{value}\n")
    assert gpu_used("0000:c3:00.0", tmp_path, nvidia=lambda: None) == ((256 << 20) + (40 << 30),
                                                                       (512 << 20) + (96 << 30))
    # nvidia-smi --query-gpu=pci.bus_id,memory.used,memory.total --format=csv,noheader,nounits (an H200)
    smi = parse_nvidia_used("00000000:00:06.0, 3590, 143771\n")
    assert smi == {"0000:00:06.0": (3590 * MIB, 143771 * MIB)}
    assert gpu_used("0000:00:06.0", tmp_path, nvidia=lambda: smi) == (3590 * MIB, 143771 * MIB)
    assert gpu_used("0000:99:00.0", tmp_path, nvidia=lambda: None) is None
    assert outside_share(6 << 30, 16 << 30, 2 << 30) == 0.25 and outside_share(1, 0, 0) == 0.0
    assert outside_share(1 << 30, 16 << 30, 2 << 30) == 0.0  # hal0's own figure may run ahead of the driver's


async def test_a_gate_is_vacant_only_when_nobody_holds_or_waits_for_a_place() -> None:
    """An eviction waits on ``vacant``, not ``drained``: a request that woke a slot holds a place
    while the slot loads, before it is active, and must not see the slot taken from it."""
    from hal0.slots.gate import Gate

    gate = Gate("g", 1, 4)
    assert gate.vacant.is_set()
    await gate.enter()
    assert not gate.vacant.is_set() and gate.drained.is_set()  # holds a place, not yet active
    second = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0)
    gate.leave()  # the place goes to the waiter
    await second
    assert not gate.vacant.is_set()
    third = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0)
    third.cancel()  # a waiter that gives up
    with pytest.raises(asyncio.CancelledError):
        await third
    assert not gate.vacant.is_set()
    gate.leave()
    assert gate.vacant.is_set()


@pytest.mark.backends
@pytest.mark.slow
async def test_a_swap_to_a_model_over_the_budget_rolls_back(paths: Paths) -> None:
    """The swap stops the old model, the new one has no room (its fit estimate is over the budget),
    and the old one, whose measured figure fits, serves again."""
    from hal0.errors import SlotSwapFailed

    await _measure_both(paths)  # tiny-chat's measured figure is in the ledger: tens of MiB
    cfg = slot_config("a", models()["tiny-chat"])
    mem = MemoryConfig(ram_budget="200MiB", reserve=0)  # Gemma 3 270M's estimate alone is over 500 MiB
    async with slot_manager(paths, [cfg], llama_bin(), memory=mem) as (mgr, _):
        a = mgr.get("a")
        await a.ensure_ready()
        with pytest.raises(SlotSwapFailed) as err:
            await a.swap(models()["gemma3-270m"])
        assert err.value.details["rolled_back"] is True and "cannot load" in err.value.details["reason"]
        assert (a.state, a.model_id) == (S.READY, "tiny-chat")


def test_the_tier_pins_chat_on_big_boxes_and_sets_parallel_decoding() -> None:
    from hal0.hardware.seeding import seed_slots

    def box(vendor: str, vram_gib: int) -> dict[str, Any]:
        gpu = {"pci": "0000:01:00.0", "vendor": vendor, "vram_bytes": vram_gib << 30, "gtt_bytes": None}
        return {"gpus": [gpu], "primary_gpu": gpu["pci"], "rocm": {"kfd": False}, "vulkan": {"gpu": True},
                "memory": {"total_bytes": 64 << 30}}

    big = seed_slots(box("nvidia", 80))
    assert big["primary"].slot.pinned and big["embed"].slot.pinned and not big["img"].slot.pinned
    assert big["primary"].slot.server.parallel == 8 and big["embed"].slot.server.parallel == 0
    cpu = seed_slots({"gpus": [], "primary_gpu": None, "rocm": {"kfd": False}, "vulkan": {"gpu": False},
                      "memory": {"total_bytes": 16 << 30}})
    assert not any(s.slot.pinned for s in cpu.values()) and cpu["primary"].slot.server.parallel == 0
