"""Beyond one box (issue 19): llama.cpp RPC workers and hal0 peers, across network namespaces.

Each test makes its own namespace ("box B") joined to this one ("box A") by a veth pair, so
that the boxes talk over their own addresses as two machines would: A is 10.77.N.1 (and
10.77.N.3, an address outside the worker's allow-list), B is 10.77.N.2. Everything runs for
real: ``hal0 worker`` (rpc-server behind hal0's gate), ``hal0 serve`` with the real
llama-server and the tiny chat model.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hal0.config.defaults import render_slot_toml
from hal0.config.load import load_slot, split_hostport
from hal0.config.schema import ProviderConfig, SlotConfig
from hal0.models.registry import ResolvedModel
from hal0.paths import Paths
from hal0.providers.llama_server import LlamaServer
from hal0.worker.gate import Gate, parse_allow
from tests.helpers.env import HAL0, REPO, free_port, hal0_env, manifest
from tests.helpers.serve import Served, serving, setup_home

pytestmark = [pytest.mark.backends, pytest.mark.slow]

_counter = itertools.count()


@dataclass(frozen=True)
class Boxes:
    ns: str  # box B's namespace
    a: str  # box A's address (this namespace)
    a_outside: str  # box A's second address, outside the worker's allow-list
    b: str  # box B's address

    def exec(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def boxes() -> Iterator[Boxes]:
    """Box B: a network namespace with a veth pair to this one, named for this process and test."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add); run the suite as root to test multi-box")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    k = next(_counter)
    tag = f"{os.getpid() % 100000}{k}"
    ns, veth_a, veth_b = f"hal0b-{tag}", f"h0a{tag}", f"h0b{tag}"
    net = f"10.77.{(os.getpid() * 7 + k) % 250 + 1}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here (no CAP_NET_ADMIN?): {made.stderr.strip()}")
    try:
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_b, "netns", ns)
        _ip("addr", "add", f"{net}.1/24", "dev", veth_a)
        _ip("addr", "add", f"{net}.3/24", "dev", veth_a)
        _ip("link", "set", veth_a, "up")
        _ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", veth_b)
        _ip("-n", ns, "link", "set", veth_b, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield Boxes(ns, f"{net}.1", f"{net}.3", f"{net}.2")
    finally:
        subprocess.run(["ip", "link", "del", veth_a], capture_output=True)  # takes its peer along
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --- processes ----------------------------------------------------------------------------

@dataclass
class Worker:
    proc: subprocess.Popen[str]
    addr: str
    log: list[str]
    drain: threading.Thread

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; its exit code once its whole log is read."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.drain.join(timeout=60)
        return code


@contextmanager
def worker(boxes: Boxes, home: Path, port: int, allow: str) -> Iterator[Worker]:
    """``hal0 worker`` in box B, listening on B's address; yields once its gate is open."""
    argv = boxes.exec([*HAL0, "worker", "--host", boxes.b, "--port", str(port), "--allow", allow, "--threads", "1"])
    proc = subprocess.Popen(argv, env=hal0_env(home), stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    log: list[str] = []
    drain: threading.Thread | None = None
    try:
        for line in proc.stdout:
            log.append(line)
            if "hal0 worker listening on" in line:
                break
        else:
            raise RuntimeError("hal0 worker exited before listening:\n" + "".join(log))
        drain = threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True)
        drain.start()  # a full pipe would block the worker (it logs rpc-server's output)
        yield Worker(proc, f"{boxes.b}:{port}", log, drain)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # it stops rpc-server; a kill would orphan it
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if drain is not None:
            drain.join(timeout=60)
        proc.stdout.close()


def init_box(home: Path, model: str, **slots: float | int) -> str:
    """A hal0 home with ``model`` in primary on the real llama-server; returns its admin token."""
    setup_home(home, manifest()["llama_server"]["bin"], model, **slots)
    return (home / "etc/admin.token").read_text().strip()


def set_slot(home: Path, slot: str, **keys: Any) -> None:
    """Set top-level keys of a slot's TOML (before serve reads it)."""
    toml = home / f"etc/slots/{slot}.toml"
    head, sep, rest = toml.read_text().partition("\n[")  # top-level keys come before the first table
    for k, v in keys.items():
        line = f"{k} = {json.dumps(v)}"
        head, n = re.subn(rf"^{k} = .*$", line, head, count=1, flags=re.M)
        head += "" if n else "\n" + line
    toml.write_text(head + sep + rest)


def add_slot(home: Path, name: str, model: str) -> None:
    """A custom llama-server slot running ``model``, on a free port."""
    (home / f"etc/slots/{name}.toml").write_text(
        f'name = "{name}"\nprovider = "llama-server"\nbackend = "cpu"\nport = {free_port()}\n'
        f'[model]\ndefault = "{model}"\ncontext_size = 2048\n')


def until(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Look again (every 0.1 s) until ``check()`` returns something true; its value. Raises
    AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:g}s (last: {last!r})")


def slot_state(s: Served, token: str, slot: str) -> dict[str, Any]:
    status, body = s.get(f"/api/slots/{slot}", token)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


COMPLETION = {"prompt": "The three boxes on the shelf are", "max_tokens": 24, "temperature": 0, "seed": 7,
              "ignore_eos": True}


def complete(s: Served, token: str, model: str) -> tuple[int, Any]:
    return s.post("/v1/completions", token, {**COMPLETION, "model": model})


def rpc_hello(src: str, addr: str) -> bytes:
    """Open a connection to a worker from address ``src`` and send rpc-server's HELLO (protocol
    5: command 14, a 24-byte body beginning with the client's version); its answer, or b"" if the
    connection is closed or reset."""
    host, port = addr.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((src, 0))
        sock.connect((host, int(port)))
        try:
            sock.sendall(bytes([14]) + struct.pack("<Q", 24) + bytes([5, 0, 0]) + bytes(21))
            return sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            return b""


# --- RPC workers ----------------------------------------------------------------------------

def test_worker_refuses_a_public_address_without_an_allow_list(tmp_path: Path) -> None:
    """rpc-server has no authentication: ``hal0 worker`` will not listen beyond loopback unless it
    is told who may connect."""
    out = subprocess.run([*HAL0, "worker", "--host", "0.0.0.0", "--port", str(free_port())],
                         env=hal0_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "without --allow" in out.stderr and "no authentication" in out.stderr


def test_a_connection_from_outside_the_allow_list_is_refused(boxes: Boxes, tmp_path: Path) -> None:
    """Only box A's first address may reach rpc-server; its second one is reset by the gate before
    a byte reaches rpc-server, while the allowed one gets rpc-server's HELLO answer."""
    init_box(tmp_path / "b", manifest()["models"]["tiny-chat"])
    with worker(boxes, tmp_path / "b", free_port(), f"{boxes.a}/32") as w:
        assert rpc_hello(boxes.a_outside, w.addr) == b""
        answer = rpc_hello(boxes.a, w.addr)
        assert len(answer) >= 8 and struct.unpack("<Q", answer[:8])[0] > 0  # the reply's length
        assert w.stop() == 0
    log = "".join(w.log)
    assert f"refused a connection from {boxes.a_outside}" in log
    assert f"refused a connection from {boxes.a}" not in log
    assert log.count("Accepted client connection") >= 1  # the allowed HELLO reached rpc-server


def test_a_slot_split_over_a_worker_answers_as_one_box_and_survives_the_worker(boxes: Boxes, tmp_path: Path) -> None:
    """Box A's primary runs over box B's worker (``rpc``): the same tokens as A alone at a fixed
    seed and temperature 0; stopping the worker puts primary in error naming it; starting it
    again brings primary back with nobody touching box A."""
    models = manifest()["models"]
    port = free_port()
    home_a = tmp_path / "a"
    token = init_box(home_a, models["tiny-chat"], liveness_interval_s=0.5, liveness_failures=2)
    addr = f"{boxes.b}:{port}"
    set_slot(home_a, "primary", rpc=[addr])
    add_slot(home_a, "solo", models["tiny-chat"])  # the same model on box A alone
    init_box(tmp_path / "b", models["tiny-chat"])  # box B: only its [providers] (where rpc-server is)
    with worker(boxes, tmp_path / "b", port, f"{boxes.a}/32") as w, serving(home_a) as s:
        s.load("primary", token)
        s.load("solo", token)
        assert slot_state(s, token, "primary")["workers"] == {addr: "up"}
        split, alone = complete(s, token, "primary"), complete(s, token, "solo")
        assert split[0] == alone[0] == 200, (split, alone)
        assert split[1]["choices"][0]["text"] == alone[1]["choices"][0]["text"]
        assert split[1]["usage"]["completion_tokens"] == alone[1]["usage"]["completion_tokens"] == 24
        status = subprocess.run([*HAL0, "status"], env=hal0_env(home_a), capture_output=True, text=True, timeout=60)
        assert re.search(rf"primary\s+{re.escape(addr)}\s+up", status.stdout), status.stdout
        first_pid = slot_state(s, token, "primary")["pid"]

        assert w.stop() == 0
        down = until("primary in error naming the worker", lambda: (
            st if (st := slot_state(s, token, "primary"))["state"] == "error" and addr in st["message"] else None))
        assert "unreachable" in down["message"]
        assert down["workers"][addr] != "up"
        code, body = complete(s, token, "primary")
        assert code == 503 and addr in body["error"]["message"], body
        assert complete(s, token, "solo")[0] == 200  # the rest of box A carries on

        with worker(boxes, tmp_path / "b", port, f"{boxes.a}/32"):
            back = until("primary back once the worker is", lambda: (
                st if (st := slot_state(s, token, "primary"))["state"] == "ready" else None))
            assert back["pid"] != first_pid and back["workers"] == {addr: "up"}
            again = complete(s, token, "primary")
            assert again[0] == 200 and again[1]["choices"][0]["text"] == alone[1]["choices"][0]["text"]


def test_a_slot_whose_worker_is_missing_names_it_and_starts_once_it_appears(boxes: Boxes, tmp_path: Path) -> None:
    """Readiness includes the workers: a load with the worker absent fails at once naming it
    (no llama-server is spawned), and the slot starts by itself when the worker comes."""
    models = manifest()["models"]
    port = free_port()
    home_a = tmp_path / "a"
    token = init_box(home_a, models["tiny-chat"], liveness_interval_s=0.5)
    addr = f"{boxes.b}:{port}"
    set_slot(home_a, "primary", rpc=[addr])
    init_box(tmp_path / "b", models["tiny-chat"])
    with serving(home_a) as s:
        st = until("primary in error", lambda: (
            st if (st := slot_state(s, token, "primary"))["state"] == "error" else None))
        assert addr in st["message"] and st["pid"] is None and st["starts"] == 0
        with worker(boxes, tmp_path / "b", port, f"{boxes.a}/32"):
            until("primary ready", lambda: slot_state(s, token, "primary")["state"] == "ready")
            assert complete(s, token, "primary")[0] == 200


# --- peers ----------------------------------------------------------------------------------

def test_a_peer_s_models_are_listed_as_remote_served_through_it_and_marked_down(boxes: Boxes,
                                                                                tmp_path: Path) -> None:
    """Box A lists box B's models as remote (named for the peer), answers a request for one through
    B with B's answer, finds a model B loads later on the first requests that name it (long before
    the list's TTL), and marks B down within seconds of B stopping: its models then answer 503
    ``upstream.unavailable`` at once."""
    models = manifest()["models"]
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    token_a = init_box(home_a, models["tiny-chat"])
    set_slot(home_a, "primary", enabled=False)  # box A runs no model of its own
    init_box(home_b, models["tiny-chat"])
    later = tmp_path / "tiny-chat-later.gguf"
    shutil.copyfile(models["tiny-chat"], later)
    add_slot(home_b, "later", str(later))
    set_slot(home_b, "later", enabled=False)
    token_b = subprocess.run([*HAL0, "token", "create", "box-a", "--scope", "inference", "--json"],
                             env=hal0_env(home_b), capture_output=True, text=True, check=True).stdout
    secret = json.loads(token_b)["token"]
    port_b = free_port()
    with (home_a / "etc/hal0.toml").open("a") as f:
        f.write(f'\n[peers.boxb]\nurl = "http://{boxes.b}:{port_b}"\ntoken_env = "BOXB_TOKEN"\n'
                'health_interval_s = 0.5\nmodels_ttl_s = 3600\n')
    with serving(home_b, argv=boxes.exec(HAL0), port=port_b, host=boxes.b) as b:
        admin_b = (home_b / "etc/admin.token").read_text().strip()
        b.load("primary", admin_b)
        direct = complete(b, secret, "tiny-chat")
        assert direct[0] == 200
        with serving(home_a, env=hal0_env(home_a, BOXB_TOKEN=secret)) as a:
            entry = until("box B's model listed on box A", lambda: next(
                (m for m in a.get("/v1/models")[1]["data"] if m["id"] == "tiny-chat"), None))
            assert (entry["peer"], entry["owned_by"], entry["state"]) == ("boxb", "boxb", "remote")
            through = complete(a, token_a, "tiny-chat")
            assert through[0] == 200, through
            assert through[1]["choices"][0]["text"] == direct[1]["choices"][0]["text"]

            assert b.post("/api/slots/later/enable", admin_b, {})[0] == 200
            b.load("later", admin_b)  # box A's list (TTL an hour) does not have it: a miss refreshes it
            until("B's new model answered through A", lambda: complete(a, token_a, "tiny-chat-later")[0] == 200,
                  timeout=20)
            assert b.stop() == 0

            def peer() -> dict[str, Any]:
                return next(u for u in a.get("/api/status", token_a)[1]["upstreams"] if u["name"] == "boxb")
            down = until("box B marked down", lambda: p if (p := peer())["state"] == "down" else None, timeout=10)
            assert down["reason"]
            code, body = complete(a, token_a, "tiny-chat")
            assert code == 503 and body["error"]["code"] == "upstream.unavailable", body
            assert "boxb is down" in body["error"]["message"]
            listed = next(m for m in a.get("/v1/models")[1]["data"] if m["id"] == "tiny-chat")
            assert listed["state"] == "down"


def test_an_upstream_gets_the_same_health_checks(tmp_path: Path) -> None:
    """``[upstreams.*]`` are health-checked too: one that stops answering is marked down, and its
    models answer 503 at once (not 502 after a failed forward)."""
    models = manifest()["models"]
    home_b, home_a = tmp_path / "b", tmp_path / "a"
    init_box(home_b, models["tiny-chat"])
    token_b = (home_b / "etc/admin.token").read_text().strip()
    token_a = init_box(home_a, models["tiny-chat"])
    set_slot(home_a, "primary", enabled=False)
    port_b = free_port()
    with (home_a / "etc/hal0.toml").open("a") as f:
        f.write(f'\n[upstreams.other]\nurl = "http://127.0.0.1:{port_b}/v1"\napi_key_env = "OTHER_KEY"\n'
                'models = ["tiny-chat"]\nhealth_interval_s = 0.5\n')
    with serving(home_b, port=port_b) as b, serving(home_a, env=hal0_env(home_a, OTHER_KEY=token_b)) as a:
        b.load("primary", token_b)
        assert complete(a, token_a, "tiny-chat")[0] == 200
        assert b.stop() == 0
        until("the upstream marked down", lambda: next(
            u for u in a.get("/api/status", token_a)[1]["upstreams"] if u["name"] == "other")["state"] == "down",
            timeout=10)
        code, body = complete(a, token_a, "tiny-chat")
        assert code == 503 and body["error"]["code"] == "upstream.unavailable", body


# --- pure parts ---------------------------------------------------------------------------------

def test_the_gate_allows_only_its_networks() -> None:
    gate = Gate(parse_allow(["10.0.0.5", "192.168.1.0/24", "fd00::/8"]), 1)
    assert [gate.allowed(h) for h in ("10.0.0.5", "10.0.0.6", "192.168.1.77", "192.168.2.1", "::ffff:10.0.0.5",
                                      "fd12::1", "fe80::1%eth0", "127.0.0.1", "not-an-address")] == [
        True, False, True, False, True, True, False, False, False]
    with pytest.raises(ValueError, match=re.escape("192.168.1.0/33")):
        parse_allow(["192.168.1.0/33"])


@pytest.mark.parametrize(("addr", "want"), [
    ("10.0.0.2:50052", ("10.0.0.2", 50052)), ("box-b.lan:1", ("box-b.lan", 1)), ("[fd00::2]:50052", ("fd00::2", 50052)),
])
def test_worker_addresses_split(addr: str, want: tuple[str, int]) -> None:
    assert split_hostport(addr) == want


def test_a_slot_s_workers_survive_a_rewrite_of_its_toml(paths: Paths) -> None:
    """hal0 rewrites a slot's TOML (enable, disable, backend): its ``rpc`` list must stay."""
    slot = SlotConfig(name="big", port=8090, rpc=("10.0.0.2:50052", "[fd00::3]:50052"))
    paths.slots_dir.mkdir(parents=True)
    paths.slot_toml("big").write_text(render_slot_toml(slot))
    assert load_slot(paths.slot_toml("big")) == slot
    assert "rpc" not in render_slot_toml(SlotConfig(name="small", port=8091))


def test_the_llama_server_argv_names_the_workers_and_offloads_to_them() -> None:
    """A cpu slot offloads nothing, unless it has workers: then its layers go to them (-1: all)."""
    m = manifest()
    settings = ProviderConfig(bin=m["llama_server"]["bin"])
    model = ResolvedModel("tiny-chat", Path(m["models"]["tiny-chat"]))
    alone = LlamaServer().launch(SlotConfig(name="primary", port=8090), model, settings, Path("/tmp")).argv
    split = LlamaServer().launch(SlotConfig(name="primary", port=8090, rpc=("10.0.0.2:1", "10.0.0.3:2")), model,
                                 settings, Path("/tmp")).argv
    assert "--rpc" not in alone and alone[alone.index("--n-gpu-layers") + 1] == "0"
    assert split[split.index("--rpc") + 1] == "10.0.0.2:1,10.0.0.3:2"
    assert split[split.index("--n-gpu-layers") + 1] == "-1"


def test_the_worker_unit_runs_hal0_worker(tmp_path: Path) -> None:
    out = subprocess.run([*HAL0, "unit", "--worker"], env=hal0_env(tmp_path), capture_output=True, text=True,
                         check=True).stdout
    assert "ExecStart=/usr/local/bin/hal0 worker --system $HAL0_WORKER_ARGS" in out
    assert "EnvironmentFile=-/etc/hal0/worker.env" in out
    assert (REPO / "packaging/systemd/hal0-worker.service").read_text() == out
