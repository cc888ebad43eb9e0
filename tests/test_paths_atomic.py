from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from hal0.atomic import atomic_write
from hal0.paths import resolve_paths


def test_home_mode_puts_config_in_etc_and_state_in_var(tmp_path: Path) -> None:
    p = resolve_paths({"HAL0_HOME": str(tmp_path)}, root=tmp_path / "root")
    assert (p.mode, p.config_dir, p.state_dir) == ("home", tmp_path / "etc", tmp_path / "var")
    assert p.slot_state_dir("primary") == tmp_path / "var/slots/primary"


def test_system_mode_when_etc_hal0_exists(tmp_path: Path) -> None:
    (tmp_path / "etc/hal0").mkdir(parents=True)
    (tmp_path / "etc/hal0/hal0.toml").write_text("")
    p = resolve_paths({"HOME": "/home/x"}, root=tmp_path)
    assert (p.mode, p.config_dir, p.state_dir) == ("system", tmp_path / "etc/hal0", tmp_path / "var/lib/hal0")


def test_system_flag_forces_system_mode(tmp_path: Path) -> None:
    assert resolve_paths({"HOME": "/home/x"}, system=True, root=tmp_path).mode == "system"


def test_user_mode_follows_xdg(tmp_path: Path) -> None:
    p = resolve_paths({"HOME": "/home/x", "XDG_CONFIG_HOME": "/cfg", "XDG_DATA_HOME": "/data"}, root=tmp_path)
    assert (p.mode, p.config_dir, p.state_dir) == ("user", Path("/cfg/hal0"), Path("/data/hal0"))
    p = resolve_paths({"HOME": "/home/x"}, root=tmp_path)
    assert (p.config_dir, p.state_dir) == (Path("/home/x/.config/hal0"), Path("/home/x/.local/share/hal0"))


def test_atomic_write_applies_mode_before_the_file_appears(tmp_path: Path) -> None:
    target = tmp_path / "a/b/secret"
    atomic_write(target, "s3cret", mode=0o600)
    assert target.read_text() == "s3cret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret"]


def test_a_writer_killed_mid_write_leaves_a_whole_file(tmp_path: Path) -> None:
    """Kill a process that rewrites a file in a loop: the file is always one whole version."""
    target = tmp_path / "state.json"
    versions = {"A" * 200_000, "B" * 300_000}
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from hal0.atomic import atomic_write
        p = Path({str(target)!r})
        atomic_write(p, "A" * 200_000)
        for i in range(10**9):
            atomic_write(p, ("A" * 200_000) if i % 2 else ("B" * 300_000))
            if i == 20:
                print("going", flush=True)
    """)
    for _ in range(3):
        with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"going\n"
            proc.send_signal(signal.SIGKILL)
        assert target.read_text() in versions
