"""Pulls against a local hub with real files: resume, verification, shared downloads, cancel,
quantisations and credentials, all over real HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

import hal0.models.download as download_module
import hal0.models.pulls as pulls_module
from hal0.errors import (
    ModelChecksumMismatch,
    ModelNoSpace,
    ModelNotFound,
    ModelPullFailed,
    PullCancelled,
    RequestInvalid,
    SlotStartFailed,
)
from hal0.events import EventBus
from hal0.models.download import Source, download
from hal0.models.pulls import Pulls
from hal0.models.registry import Registry
from hal0.paths import Paths, resolve_paths
from hal0.slots import SlotState
from tests.helpers.env import HAL0, hal0_env, manifest
from tests.helpers.hub import COMMIT, FakeHub, Faults, fake_hub, sha256_of
from tests.helpers.serve import sdk, serving, setup_home
from tests.helpers.slots import llama_bin, slot_config, slot_manager

pytestmark = pytest.mark.backends


def model(name: str) -> Path:
    return Path(manifest()["models"][name])


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with fake_hub() as h:
        yield h


@pytest.fixture
async def pulls(paths: Paths, hub: FakeHub) -> AsyncIterator[Pulls]:
    async with aiohttp.ClientSession() as session, \
            Pulls(paths, Registry(paths), session, EventBus(), {"HF_ENDPOINT": hub.hub_url,
                                                               "HF_TOKEN": "hf_secret"}) as p:
        yield p


async def test_a_clean_pull_is_verified_and_registered(pulls: Pulls, hub: FakeHub, paths: Paths) -> None:
    sha = hub.add("acme/tiny-GGUF", "tiny-chat.gguf", model("tiny-chat"))
    entry = await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
    assert entry.id == "tiny-chat" and entry.verified and entry.revision == COMMIT
    assert Path(entry.path) == paths.models_dir / "tiny-chat" / "tiny-chat.gguf"
    assert [(f.sha256, f.source) for f in entry.files] == [(sha, f"hf://acme/tiny-GGUF/tiny-chat.gguf@{COMMIT}")]
    assert sha256_of(Path(entry.path)) == sha
    assert Registry(paths).get("tiny-chat") == entry  # on disk, as the server would read it
    assert not list(Path(entry.path).parent.glob("*.partial*"))


async def test_a_stalled_download_resumes_with_a_range(pulls: Pulls, hub: FakeHub,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "READ_TIMEOUT_S", 0.5)
    src = model("tiny-chat")
    hub.add("acme/tiny-GGUF", "tiny-chat.gguf", src)
    half = src.stat().st_size // 2
    hub.faults["tiny-chat.gguf"] = Faults(stall_at=half)
    entry = await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
    asked = [s.headers.get("Range") for s in hub.cdn_requests("tiny-chat.gguf")]
    assert asked == [None, f"bytes={half}-"]  # the second request asked only for the rest
    assert entry.verified and sha256_of(Path(entry.path)) == sha256_of(src)


async def test_a_connection_dropped_at_half_resumes_with_a_range(pulls: Pulls, hub: FakeHub) -> None:
    """A large file cut off at its middle: the client has written most of what came (it cannot
    buffer half of 253 MB), so the retry asks only for the rest."""
    src = model("gemma3-270m")
    hub.add("acme/gemma-GGUF", "gemma.gguf", src)
    hub.faults["gemma.gguf"] = Faults(drop_at=src.stat().st_size // 2)
    entry = await pulls.pull("hf://acme/gemma-GGUF/gemma.gguf")
    first, second = hub.cdn_requests("gemma.gguf")
    assert "Range" not in first.headers
    start = int(second.headers["Range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= src.stat().st_size // 2
    assert entry.verified and sha256_of(Path(entry.path)) == sha256_of(src)


@pytest.mark.parametrize("fault", [Faults(drop_at=1000, no_range=True),
                                   Faults(drop_at=1000, new_etag_after_first=True)], ids=["no-range", "changed-etag"])
async def test_a_server_that_cannot_resume_starts_over(pulls: Pulls, hub: FakeHub, fault: Faults) -> None:
    src = model("tiny-chat")
    hub.add("acme/tiny-GGUF", "tiny-chat.gguf", src)
    hub.faults["tiny-chat.gguf"] = fault
    entry = await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
    assert len(hub.cdn_requests("tiny-chat.gguf")) == 2
    assert entry.verified and sha256_of(Path(entry.path)) == sha256_of(src)


async def test_corrupted_bytes_register_nothing_and_leave_nothing(pulls: Pulls, hub: FakeHub, paths: Paths) -> None:
    hub.add("acme/tiny-GGUF", "tiny-chat.gguf", model("tiny-chat"))
    hub.faults["tiny-chat.gguf"] = Faults(corrupt=True)
    with pytest.raises(ModelChecksumMismatch) as e:
        await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
    assert e.value.details["expected"] == sha256_of(model("tiny-chat")) != e.value.details["actual"]
    assert Registry(paths).entries() == {}
    assert [p.name for p in (paths.models_dir / "tiny-chat").iterdir()] == []
    assert pulls.jobs()[0].to_json()["error"]["code"] == "model.checksum_mismatch"


async def test_two_pulls_of_one_file_share_one_download(pulls: Pulls, hub: FakeHub) -> None:
    hub.add("acme/gemma-GGUF", "gemma.gguf", model("gemma3-270m"))
    a, b = await asyncio.gather(pulls.pull("hf://acme/gemma-GGUF/gemma.gguf"),
                                pulls.pull("hf://acme/gemma-GGUF/gemma.gguf"))
    assert a.path == b.path and a.verified
    assert len(hub.cdn_requests("gemma.gguf")) == 1


async def test_a_cancelled_pull_keeps_its_partial_and_resumes_later(pulls: Pulls, hub: FakeHub, paths: Paths,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pulls_module, "PROGRESS_EVERY_S", 0)  # an event for every block that arrives
    src = model("gemma3-270m")
    hub.add("acme/gemma-GGUF", "gemma.gguf", src)
    hub.faults["gemma.gguf"] = Faults(stall_at=10_000_000)  # mid-file, and it stays there
    with pulls.events.subscribe(maxsize=100_000) as sub:
        job = await pulls.start("hf://acme/gemma-GGUF/gemma.gguf")
        while not ((e := await sub.get()) and e.kind == "model.pull" and e.data["done"] == 10_000_000):
            pass
    pulls.cancel(job.id)
    with pytest.raises(PullCancelled):
        await job.result
    assert job.state == "cancelled" and Registry(paths).entries() == {}
    partial = paths.models_dir / "gemma" / "gemma.gguf.partial"
    assert partial.stat().st_size == 10_000_000
    entry = await pulls.pull("hf://acme/gemma-GGUF/gemma.gguf")
    assert hub.cdn_requests("gemma.gguf")[-1].headers["Range"] == "bytes=10000000-"
    assert entry.verified and entry.size == src.stat().st_size


async def test_progress_before_a_stall_is_published(pulls: Pulls, hub: FakeHub) -> None:
    """Once at most every PROGRESS_EVERY_S, but the latest figure always goes out: the dashboard
    showed "0 B" for a pull whose bytes arrived within one interval before the download stalled."""
    src = model("gemma3-270m")
    hub.add("acme/gemma-GGUF", "gemma.gguf", src)
    hub.faults["gemma.gguf"] = Faults(stall_at=10_000_000)  # mid-file, and it stays there
    with pulls.events.subscribe(maxsize=100_000) as sub:
        job = await pulls.start("hf://acme/gemma-GGUF/gemma.gguf")
        async with asyncio.timeout(60):
            while not ((e := await sub.get()) and e.kind == "model.pull" and e.data["done"] == 10_000_000):
                pass
    pulls.cancel(job.id)
    with pytest.raises(PullCancelled):
        await job.result


async def test_quantisation_picks_every_part_of_a_split_gguf(pulls: Pulls, hub: FakeHub, tmp_path: Path) -> None:
    parts = []
    for i in (1, 2):
        part = tmp_path / f"part{i}"
        part.write_bytes(b"GGUF" + bytes([i]) * 1000)
        parts.append(part)
        hub.add("acme/big-GGUF", f"Q4_K_M/big-Q4_K_M-0000{i}-of-00002.gguf", part)
    hub.add("acme/big-GGUF", "big-Q8_0.gguf", model("tiny-chat"))
    entry = await pulls.pull("hf://acme/big-GGUF:q4_k_m")
    assert entry.id == "big-gguf-q4_k_m" and len(entry.files) == 2 and entry.verified
    assert Path(entry.path).name == "big-Q4_K_M-00001-of-00002.gguf"  # llama-server opens the first part
    with pytest.raises(ModelNotFound, match="Q8_0"):
        await pulls.plan("hf://acme/big-GGUF:Q5_K_M")


async def test_the_token_goes_to_the_hub_and_not_to_the_file_host(pulls: Pulls, hub: FakeHub) -> None:
    hub.add("acme/tiny-GGUF", "tiny-chat.gguf", model("tiny-chat"))
    await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
    assert {s.headers.get("Authorization") for s in hub.seen if s.host == "hub"} == {"Bearer hf_secret"}
    assert {s.headers.get("Authorization") for s in hub.seen if s.host == "cdn"} == {None}


async def test_bad_references_are_refused_before_anything_moves(pulls: Pulls, hub: FakeHub) -> None:
    for ref, err in (("hf://acme", RequestInvalid), ("hf://acme/none-GGUF/x.gguf", ModelNotFound),
                     ("https://example.invalid/m.gguf", RequestInvalid), ("no-such-catalogue-id", ModelNotFound)):
        with pytest.raises(err):
            await pulls.start(ref)
    assert pulls.jobs() == []


async def test_too_little_disk_is_refused_before_the_first_byte(tmp_path: Path, hub: FakeHub) -> None:
    hub.add("acme/gemma-GGUF", "gemma.gguf", model("gemma3-270m"))
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)]
    if (await asyncio.to_thread(subprocess.run, mount, capture_output=True)).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root: the ENOSPC cases run in CI, which runs as root")
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{hub.hub_url}/acme/gemma-GGUF/resolve/main/gemma.gguf"
            size = model("gemma3-270m").stat().st_size
            with pytest.raises(ModelNoSpace) as e:  # the size is known: refused before any byte
                await download(session, Source(url, size), small / "gemma.gguf", lambda *_: None)
            assert e.value.details["needed"] == size and not (small / "gemma.gguf.partial").exists()
            hub.faults["gemma.gguf"] = Faults(chunked=True)
            with pytest.raises(ModelNoSpace):  # no size given anywhere: the disk fills up mid-way
                await download(session, Source(url), small / "gemma.gguf", lambda *_: None)
            assert (small / "gemma.gguf.partial").stat().st_size > 0  # kept for a resume
            assert not (small / "gemma.gguf").exists()
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", str(small)], check=False)
        shutil.rmtree(small, ignore_errors=True)



@pytest.mark.slow
async def test_pull_with_the_cli_then_serve_the_model(hub: FakeHub, tmp_path: Path) -> None:
    """The user's path: `hal0 model pull hf://...` against the hub, then a completion from the
    pulled Gemma on a real llama-server."""
    hub.add("google/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf", model("gemma3-270m"))
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    token = (tmp_path / "etc/admin.token").read_text().strip()
    env = hal0_env(tmp_path, HF_ENDPOINT=hub.hub_url, HF_TOKEN="hf_secret")
    with serving(tmp_path, env=env) as s:
        cli = [*HAL0, "model", "pull", "hf://google/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M.gguf", "--as", "gemma"]
        r = await asyncio.to_thread(subprocess.run, cli, env={**env, "HAL0_URL": s.url}, capture_output=True,
                                    text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1].startswith("pulled gemma (")
        listed = await asyncio.to_thread(subprocess.run, [*HAL0, "model", "list", "--json"],
                                         env={**env, "HAL0_URL": s.url}, capture_output=True, text=True, check=True)
        (entry,) = [e for e in json.loads(listed.stdout) if e["id"] == "gemma"]
        assert entry["verified"] and entry["source"].startswith("hf://google/")
        status, slot = await asyncio.to_thread(s.post, "/api/slots/primary/swap", token, {"model": "gemma"})
        assert status == 200, slot

        def complete() -> str:
            with sdk(s, token) as client:
                out = client.completions.create(model="gemma", prompt="Monday, Tuesday, Wednesday,", max_tokens=8,
                                                temperature=0)
            return out.choices[0].text
        assert (await asyncio.to_thread(complete)).startswith(" Thursday, Friday")
        listed = await asyncio.to_thread(subprocess.run, [*HAL0, "model", "list"], env={**env, "HAL0_URL": s.url},
                                         capture_output=True, text=True, check=True)
        header, *rows = listed.stdout.splitlines()
        assert header.split()[:6] == ["ID", "CAPABILITIES", "SIZE", "VERIFIED", "SLOTS", "SOURCE"]
        assert next(r for r in rows if r.startswith("gemma ")).split()[4:6] == ["yes", "primary"]  # after "253.1 MB"
        assert s.stop() == 0


@pytest.mark.slow
async def test_a_slot_pulls_its_catalogue_model_answering_503_meanwhile(hub: FakeHub, tmp_path: Path) -> None:
    """A seeded catalogue id that is not on disk: the slot goes ``pulling`` by itself, requests get
    503 ``slot.pulling`` with the progress, then it serves. The operator's own catalog.toml names
    the model here (the shipped entries point at the real hub)."""
    src = model("tiny-chat")
    sha = hub.add("acme/tiny-GGUF", "tiny-chat.gguf", src)
    resume = asyncio.Event()
    hub.faults["tiny-chat.gguf"] = Faults(stall_at=100_000, resume=resume)
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], "tiny-test")
    write_catalog(tmp_path / "etc/catalog.toml", src, sha)
    token = (tmp_path / "etc/admin.token").read_text().strip()
    env = hal0_env(tmp_path, HF_ENDPOINT=hub.hub_url)
    with serving(tmp_path, env=env) as s:
        def chat() -> Any:
            with sdk(s, token) as client:
                return client.chat.completions.create(model="primary", messages=[{"role": "user", "content": "hi"}],
                                                      max_tokens=4)
        with pytest.raises(openai.APIStatusError) as e:
            await asyncio.to_thread(chat)
        body = e.value.body
        assert e.value.status_code == 503 and body["code"] == "slot.pulling"  # type: ignore[index]
        assert e.value.response.headers["Retry-After"] == "30"
        assert body["details"]["pull"]["model"] == "tiny-test"  # type: ignore[index]
        status, slot = await asyncio.to_thread(s.get, "/api/slots/primary", token)
        assert (status, slot["state"], slot["pull"]["total"]) == (200, "pulling", src.stat().st_size)
        resume.set()
        await asyncio.to_thread(s.load, "primary", token)  # answers once the pulled model is ready
        out = await asyncio.to_thread(chat)
        assert out.model == "tiny-test" and out.usage.completion_tokens > 0
        status, entry = await asyncio.to_thread(s.get, "/api/models/tiny-test", token)
        assert status == 200 and entry["verified"] and entry["files"][0]["sha256"] == sha
        assert (entry["gguf"]["architecture"], entry["gguf"]["block_count"]) == ("llama", 2)  # read from its header
        rm = [*HAL0, "model", "rm", "tiny-test"]
        r = await asyncio.to_thread(subprocess.run, rm, env={**env, "HAL0_URL": s.url}, capture_output=True, text=True)
        assert r.returncode == 1 and "model.in_use" in r.stderr and "primary" in r.stderr
        await asyncio.to_thread(s.post, "/api/slots/primary/unload", token, {})
        r = await asyncio.to_thread(subprocess.run, rm, env={**env, "HAL0_URL": s.url}, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert not (tmp_path / "var/models/tiny-test").exists()
        status, _ = await asyncio.to_thread(s.get, "/api/models/tiny-test", token)
        assert status == 404
        assert s.stop() == 0


def write_catalog(file: Path, src: Path, sha: str) -> None:
    """The operator's own catalogue: one entry, "tiny-test", on the local hub."""
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(f"""
[[model]]
id = "tiny-test"
kind = "chat"
family = "llama"
provider = "llama-server"
license = "apache-2.0"
context_length = 2048
quantization = "F32"
memory_gb = 0.1
description = "a tiny random model"
checked = "made by the test"
[[model.files]]
source = "hf://acme/tiny-GGUF/tiny-chat.gguf"
path = "tiny-chat.gguf"
size = {src.stat().st_size}
sha256 = "{sha}"
""")


async def test_init_pull_fetches_the_seeded_models_without_a_server(hub: FakeHub, tmp_path: Path) -> None:
    src = model("tiny-chat")
    sha = hub.add("acme/tiny-GGUF", "tiny-chat.gguf", src)
    write_catalog(tmp_path / "etc/catalog.toml", src, sha)
    m = manifest()
    local = {"embed": m["models"]["tiny-embed"], "stt": m["whisper"]["model_dir"], "tts": m["kokoro"]["model"],
             "img": m["comfyui"]["checkpoint"]}  # everything else is on disk already: nothing else to fetch
    seeds = [arg for slot, path in {"primary": "tiny-test", **local}.items()
             for arg in ("--slot-model", f"{slot}={path}")]
    r = await asyncio.to_thread(subprocess.run, [*HAL0, "init", "--pull", *seeds],
                                env=hal0_env(tmp_path, HF_ENDPOINT=hub.hub_url), capture_output=True, text=True,
                                timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "  primary  tiny-test (0.00 GB)" in lines and lines[-1].startswith("pulled tiny-test (")
    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    entry = Registry(paths).get("tiny-test")
    assert entry is not None and entry.verified and entry.files[0].sha256 == sha


async def test_a_failed_pull_leaves_the_slot_in_error_with_the_command_to_retry(hub: FakeHub, paths: Paths,
                                                                                tmp_path: Path) -> None:
    src = model("tiny-chat")
    sha = hub.add("acme/tiny-GGUF", "tiny-chat.gguf", src)
    hub.faults["tiny-chat.gguf"] = Faults(corrupt=True)
    write_catalog(paths.catalog_toml, src, sha)
    cfg = slot_config("chat", "tiny-test")
    async with aiohttp.ClientSession() as session, \
            Pulls(paths, Registry(paths), session, EventBus(), {"HF_ENDPOINT": hub.hub_url}) as pulls, \
            slot_manager(paths, [cfg], llama_bin(), pulls=pulls) as (mgr, _):
        slot = mgr.get("chat")
        with pytest.raises(SlotStartFailed) as e:
            await slot.load()
        assert "sha256" in e.value.message and "`hal0 slot load chat` tries again" in e.value.message
        snap = slot.snapshot()
        assert snap.state is SlotState.ERROR and snap.last_error == e.value.message and snap.pid is None
        hub.faults.clear()  # the next try gets the right bytes
        assert (await slot.load()).state is SlotState.READY


async def test_a_disk_error_fails_that_pull_and_not_the_service(pulls: Pulls, hub: FakeHub, paths: Paths) -> None:
    """Regression: an OSError that is no hal0 error (a file where the model's folder goes) used to
    escape into the pulls' TaskGroup and end every pull with it."""
    hub.add("acme/tiny-GGUF", "tiny-chat.gguf", model("tiny-chat"))
    hub.add("acme/embed-GGUF", "tiny-embed.gguf", model("tiny-embed"))
    paths.models_dir.mkdir(parents=True)
    (paths.models_dir / "tiny-chat").write_text("in the way")
    async with asyncio.timeout(60):  # the old failure: the job's task group broke and the pull never answered
        with pytest.raises(ModelPullFailed):
            await pulls.pull("hf://acme/tiny-GGUF/tiny-chat.gguf")
        assert pulls.jobs()[0].state == "failed"
        assert (await pulls.pull("hf://acme/embed-GGUF/tiny-embed.gguf")).verified  # the service goes on
