"""hal0 as a systemd service in a freshly booted Debian: the unit, notify, restarts, the watchdog."""

from __future__ import annotations

import json
import re
import socket
import struct
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.container import Container, booted
from tests.helpers.env import REPO, free_port, manifest

pytestmark = pytest.mark.slow
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def install(box: Container, port: int) -> str:
    """What an installer does, by hand: user, pyz, init, the unit. Returns the admin token."""
    box.run("useradd --system --home-dir /var/lib/hal0 --shell /usr/sbin/nologin hal0")
    box.run("mkdir -p /opt/hal0 && cp /mnt/dist/hal0.pyz /opt/hal0/hal0.pyz && "
            "ln -s /opt/hal0/hal0.pyz /usr/local/bin/hal0")
    box.run("hal0 init --system --provider-bin llama-server=/mnt/llama/llama-server "
            "--slot-model primary=/mnt/models/tiny-chat.gguf")
    box.run(f"sed -i 's/^port = 8080$/port = {port}/' /etc/hal0/hal0.toml && "
            "for s in embed stt tts img; do sed -i 's/^enabled = true$/enabled = false/' /etc/hal0/slots/$s.toml; done "
            "&& sed -i 's/^backend = \"vulkan\"$/backend = \"cpu\"/' /etc/hal0/slots/primary.toml")
    box.run("mkdir -p /var/lib/hal0 && chown -R hal0:hal0 /etc/hal0 /var/lib/hal0")
    box.run("cp /mnt/packaging/hal0.service /etc/systemd/system/ && systemctl daemon-reload")
    return box.run("cat /etc/hal0/admin.token").stdout.strip()


def main_pid(box: Container) -> int:
    return int(box.run("systemctl show -p MainPID --value hal0").stdout)


def get(url: str, token: str | None = None, body: dict[str, object] | None = None) -> dict[str, object]:
    req = urllib.request.Request(url, json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_the_service_starts_serves_and_comes_back(pyz: Path, tmp_path: Path) -> None:
    m = manifest()
    port = free_port()
    binds = {str(pyz.parent): "/mnt/dist", str(Path(m["llama_server"]["bin"]).parent): "/mnt/llama",
             str(Path(m["models"]["tiny-chat"]).parent): "/mnt/models",
             str(REPO / "hal0/systemd"): "/mnt/packaging"}
    with booted(tmp_path, binds) as box:
        token = install(box, port)
        verify = box.run("systemd-analyze verify /etc/systemd/system/hal0.service", check=False)
        assert verify.returncode == 0, verify.stderr
        box.run("systemctl enable --now hal0")  # Type=notify: returns once hal0 said READY=1
        assert box.run("systemctl is-active hal0").stdout.strip() == "active"
        url = f"http://127.0.0.1:{port}"
        assert get(url + "/health")["status"] == "ok"
        out = get(url + "/v1/chat/completions", token, {"messages": [{"role": "user", "content": "hi"}],
                                                        "max_tokens": 3})
        assert out["model"] == "tiny-chat"
        status = box.wait_for("systemctl show -p StatusText --value hal0 | grep 'slots ready'")
        assert "primary" in status
        assert box.run("hal0 status --system").returncode == 0  # the CLI as root finds the service

        # kill -9 of hal0: systemd restarts it, and the backend it left is gone with the old cgroup
        old = main_pid(box)
        backend = int(box.run("pgrep -f 'llama-server --model'").stdout.split()[0])
        box.run(f"kill -9 {old}")
        box.wait_for(f"test $(systemctl show -p MainPID --value hal0) -ne {old} && systemctl is-active hal0")
        assert box.run(f"kill -0 {backend}", check=False).returncode != 0
        assert get(url + "/health")["status"] == "ok"

        # a hung hal0 (SIGSTOP) stops pinging the watchdog: systemd kills and restarts it
        box.run("mkdir -p /etc/systemd/system/hal0.service.d && printf '[Service]\\nWatchdogSec=2\\n' "
                "> /etc/systemd/system/hal0.service.d/watchdog.conf && systemctl daemon-reload && "
                "systemctl restart hal0")
        hung = main_pid(box)
        box.run(f"kill -STOP {hung}")
        box.wait_for(f"test $(systemctl show -p MainPID --value hal0) -ne {hung} && systemctl is-active hal0",
                     timeout=90)
        assert "watchdog" in box.run("journalctl -u hal0 --no-pager").stdout.lower()
        journal = box.run("journalctl -u hal0 --no-pager -o cat").stdout  # hal0's lines as it wrote them
        assert "hal0 listening on" in journal
        assert not re.search(r"^<\d>", journal, re.M)  # the priority prefix was the journal's to take
        assert not re.search(r"^\d{4}-\d\d-\d\d", journal, re.M)  # no time of hal0's own beside the journal's
        assert get(url + "/health")["status"] == "ok"
        box.run("systemctl stop hal0")
        assert box.run("systemctl is-active hal0", check=False).stdout.strip() == "inactive"


def test_install_sh_installs_upgrades_and_uninstalls(pyz: Path, tmp_path: Path) -> None:
    """The installer on a fresh Debian: it installs llama-server for the box, the service answers, a
    registered model chats on it; a second run keeps the token and the cached build; a pyz that does
    not run changes nothing; uninstall keeps the config, purge not."""
    m = manifest()
    port = free_port()
    corrupt = tmp_path / "bad"
    corrupt.mkdir()
    (corrupt / "hal0.pyz").write_bytes(b"PK\x03\x04 not a zipapp")
    binds = {str(pyz.parent): "/mnt/dist", str(Path(m["llama_server"]["bin"]).parent): "/mnt/llama",
             str(Path(m["models"]["tiny-chat"]).parent): "/mnt/models", str(REPO / "install.sh"): "/mnt/install.sh",
             str(corrupt): "/mnt/bad"}
    # the installer downloads llama-server: the box trusts what this machine trusts (a proxy's CA, where
    # one intercepts HTTPS), as a box behind such a proxy is set up
    binds[CA_BUNDLE] = CA_BUNDLE
    with booted(tmp_path, binds) as box:
        # no --llama-server: the installer gets the build for this (GPU-less) box from PyPI
        install = f"sh /mnt/install.sh --pyz /mnt/dist/hal0.pyz --no-models --no-engines --port {port}"
        out = box.run(install, timeout=300).stdout
        assert "is running: http://" in out and f":{port}/v1" in out
        assert "llama-server flavor: cpu (no GPU)" in out and "checking that it runs here" in out
        llama = json.loads(box.run("hal0 backend list --system --json").stdout)["llama-server"]
        assert llama["flavor"] == "cpu" and llama["bin"].startswith("/var/lib/hal0/backends/llama-server/")
        assert box.run("systemctl is-active hal0").stdout.strip() == "active"
        token = box.run("cat /etc/hal0/admin.token").stdout.strip()
        url = f"http://127.0.0.1:{port}"
        assert get(url + "/health")["status"] == "ok"
        box.run("hal0 model register tiny /mnt/models/tiny-chat.gguf --outside-roots --system")
        box.run("hal0 slot swap primary --model tiny --system", timeout=120)
        out = get(url + "/v1/chat/completions", token, {"messages": [{"role": "user", "content": "hi"}],
                                                        "max_tokens": 3})
        assert out["model"] == "tiny"
        assert box.run("stat -c %U /var/lib/hal0 /etc/hal0/admin.token").stdout.split() == ["hal0", "hal0"]
        doctor = {c["name"]: c for c in json.loads(box.run("hal0 doctor --system --json", check=False).stdout)}
        assert doctor["service"]["level"] == "ok" and doctor["engine llama-server"]["level"] == "ok"
        box.run("systemctl stop hal0")
        stopped = box.run("hal0 doctor --system", check=False)
        assert stopped.returncode == 1 and "fail  service: hal0.service is inactive" in stopped.stdout
        assert "fix: sudo systemctl start hal0" in stopped.stdout
        box.run("systemctl start hal0")

        again = box.run(install, timeout=300).stdout  # again: an upgrade in place
        assert "is cached in /var/lib/hal0/backends/llama-server/" in again
        assert get(url + "/v1/models", token)["data"]  # the same token still works
        assert box.run("cat /etc/hal0/slots/primary.env").stdout.strip() == "HAL0_MODEL=tiny"  # the swap stays
        bad = box.run("sh /mnt/install.sh --pyz /mnt/bad/hal0.pyz --no-models --no-engines", check=False)
        assert bad.returncode == 1 and "nothing was changed" in bad.stderr
        assert get(url + "/health")["status"] == "ok"

        box.run("sh /mnt/install.sh --uninstall")
        assert box.run("test -e /usr/local/bin/hal0 || test -e /etc/systemd/system/hal0.service",
                       check=False).returncode != 0
        assert box.run("test -f /etc/hal0/admin.token && test -d /var/lib/hal0").returncode == 0
        box.run("sh /mnt/install.sh --uninstall --purge")
        assert box.run("test -e /etc/hal0 || test -e /var/lib/hal0 || id hal0", check=False).returncode != 0


def test_install_sh_on_debian_13_with_python_3_13(pyz: Path, tmp_path: Path) -> None:
    """The same pyz on trixie's Python 3.13: it carries each version's compiled extensions, so the
    service runs with aiohttp's own (doctor says so) and a model chats through it."""
    m = manifest()
    port = free_port()
    binds = {str(pyz.parent): "/mnt/dist", str(Path(m["llama_server"]["bin"]).parent): "/mnt/llama",
             str(Path(m["models"]["tiny-chat"]).parent): "/mnt/models", str(REPO / "install.sh"): "/mnt/install.sh"}
    with booted(tmp_path, binds, suite="trixie") as box:
        assert box.run("python3 -c 'import sys; print(sys.version_info[:2])'").stdout.strip() == "(3, 13)"
        box.run("mv /usr/sbin/useradd /usr/sbin/useradd.away")  # a box without it is told what to install
        missing = box.run("sh /mnt/install.sh --pyz /mnt/dist/hal0.pyz", check=False)
        assert (missing.returncode, missing.stderr.strip()) == (
            1, "hal0: useradd is missing (hal0 runs as its own user): apt-get install passwd")
        box.run("mv /usr/sbin/useradd.away /usr/sbin/useradd")
        out = box.run(f"sh /mnt/install.sh --pyz /mnt/dist/hal0.pyz --llama-server /mnt/llama/llama-server "
                      f"--no-models --no-engines --port {port}", timeout=300).stdout
        assert "is running: http://" in out and "checking that /mnt/llama/llama-server runs here" in out
        llama = json.loads(box.run("hal0 backend list --system --json").stdout)["llama-server"]
        assert (llama["bin"], llama["flavor"], llama["source"]) == ("/mnt/llama/llama-server", "cpu", "yours")
        url = f"http://127.0.0.1:{port}"
        assert get(url + "/health")["status"] == "ok"
        doctor = {c["name"]: c for c in json.loads(box.run("hal0 doctor --system --json", check=False).stdout)}
        python = doctor["python"]
        assert python["level"] == "ok" and python["message"].startswith("Python 3.13."), python
        assert python["message"].endswith("aiohttp's compiled extensions")
        box.run("hal0 model register tiny /mnt/models/tiny-chat.gguf --outside-roots --system")
        box.run("hal0 slot swap primary --model tiny --system", timeout=120)
        token = box.run("cat /etc/hal0/admin.token").stdout.strip()
        chat = get(url + "/v1/chat/completions", token, {"messages": [{"role": "user", "content": "hi"}],
                                                         "max_tokens": 3})
        assert chat["model"] == "tiny"


def test_install_sh_worker_installs_the_worker_service(pyz: Path, tmp_path: Path) -> None:
    """``install.sh --worker``: hal0-worker.service (rpc-server behind the gate), no API server;
    rpc-server found beside ``--llama-server``; ``--uninstall`` removes it."""
    m = manifest()
    port = free_port()
    binds = {str(pyz.parent): "/mnt/dist", str(Path(m["llama_server"]["bin"]).parent): "/mnt/llama",
             str(REPO / "install.sh"): "/mnt/install.sh"}
    with booted(tmp_path, binds) as box:
        out = box.run(f"sh /mnt/install.sh --pyz /mnt/dist/hal0.pyz --llama-server /mnt/llama/llama-server --worker "
                      f"--worker-args '--host 127.0.0.1 --port {port} --threads 1'", timeout=300).stdout
        assert "hal0 worker" in out and f"--port {port}" in out
        verify = box.run("systemd-analyze verify /etc/systemd/system/hal0-worker.service", check=False)
        assert verify.returncode == 0, verify.stderr
        assert box.run("test -e /etc/systemd/system/hal0.service", check=False).returncode != 0
        box.wait_for(f"journalctl -u hal0-worker | grep 'hal0 worker listening on 127.0.0.1:{port}'")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # rpc-server's HELLO, protocol 5
            sock.sendall(bytes([14]) + struct.pack("<Q", 24) + bytes([5, 0, 0]) + bytes(21))
            assert struct.unpack("<Q", sock.recv(8))[0] > 0
        assert "ggml-rpc-server" in box.run("journalctl -u hal0-worker").stdout
        box.run("sh /mnt/install.sh --uninstall")
        assert box.run("test -e /etc/systemd/system/hal0-worker.service", check=False).returncode != 0
