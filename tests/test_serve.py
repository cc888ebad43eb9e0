"""``hal0 serve`` as a real process: start, answer, shut down, refuse bad config."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tests.helpers.env import HAL0, free_port, hal0_env
from tests.helpers.serve import serving


def init(home: Path) -> str:
    subprocess.run([*HAL0, "init"], env=hal0_env(home), check=True, capture_output=True)
    return (home / "etc/admin.token").read_text().strip()


def test_serve_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    token = init(tmp_path)
    with serving(tmp_path) as s:
        assert s.get("/health")[0] == 200
        status, body = s.get("/api/status", token)
        assert status == 200 and len(body["slots"]) == 5
        assert (tmp_path / "var/hal0.pid").read_text().split() == [str(s.proc.pid), s.url]
        assert s.stop() == 0
    assert any("stopped" in line for line in s.log)
    assert not (tmp_path / "var/hal0.pid").exists()


def test_cli_status_talks_to_the_running_server(tmp_path: Path) -> None:
    init(tmp_path)
    with serving(tmp_path) as s:
        r = subprocess.run([*HAL0, "status"], env=hal0_env(tmp_path, HAL0_URL=s.url),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[1].split() == ["SLOT", "STATE", "PROVIDER", "BACKEND", "PORT",
                                                    "ENABLED", "MODEL"]
        lines = r.stdout.splitlines()
        assert [line.split()[0] for line in lines[2:7]] == ["primary", "embed", "stt", "tts", "img"]
        assert "voice:  stt offline, tts offline" in lines


def test_cli_finds_a_server_started_on_another_port(tmp_path: Path) -> None:
    init(tmp_path)
    with serving(tmp_path) as s:  # on a free port, not hal0.toml's 8080
        assert (tmp_path / "var/hal0.pid").read_text().split()[1] == s.url
        r = subprocess.run([*HAL0, "status", "--json"], env=hal0_env(tmp_path), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["slots"][0]["name"] == "primary"


def test_invalid_config_refuses_to_start_with_one_line_and_exit_2(tmp_path: Path) -> None:
    init(tmp_path)
    cfg = tmp_path / "etc/hal0.toml"
    cfg.write_text("[api]\nport = 'x'\n")
    r = subprocess.run([*HAL0, "serve"], env=hal0_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"hal0: config.invalid: {cfg}: api.port: expected an integer, got 'x'"]
    assert cfg.read_text() == "[api]\nport = 'x'\n"


def test_port_in_use_is_named(tmp_path: Path) -> None:
    init(tmp_path)
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        r = subprocess.run([*HAL0, "serve", "--host", "127.0.0.1", "--port", str(port)],
                           env=hal0_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr


def test_auth_off_on_a_public_address_warns_loudly(tmp_path: Path) -> None:
    init(tmp_path)
    (tmp_path / "etc/hal0.toml").write_text('[api]\nauth = "off"\nhost = "0.0.0.0"\n')
    port = free_port()
    seen = []
    with subprocess.Popen([*HAL0, "serve", "--port", str(port)], env=hal0_env(tmp_path),
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "hal0 listening on" in line:
                break
        proc.terminate()
    assert any("AUTHENTICATION IS OFF" in line for line in seen)


def test_under_systemd_it_notifies_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    """Type=notify: hal0 speaks $NOTIFY_SOCKET itself (a datagram socket the test holds), pings
    the watchdog from its loop, and logs without its own timestamps for the journal."""
    init(tmp_path)
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(30)
        env = hal0_env(tmp_path, NOTIFY_SOCKET=str(address), WATCHDOG_USEC="400000", JOURNAL_STREAM="8:1234")

        def until(prefix: str) -> list[str]:
            got: list[str] = []
            while not (got and got[-1].startswith(prefix)):
                got.append(sock.recv(4096).decode())
            return got
        with serving(tmp_path, env=env) as s:
            seen = until("READY=1")
            seen += until("STATUS=")
            assert seen[-1].startswith("STATUS=0 of 5 slots ready: primary ")  # the enabled slots and their states
            pings = [m for m in until("WATCHDOG=1") + until("WATCHDOG=1") if m == "WATCHDOG=1"]
            assert len(pings) >= 2  # it keeps pinging while it runs
            assert s.stop() == 0
            assert "STOPPING=1" in until("STOPPING=1")
    assert s.log and all(not line[:4].isdigit() for line in s.log)  # no "2026-..." stamp before the level
