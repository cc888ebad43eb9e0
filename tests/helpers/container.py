"""A fresh Debian with systemd as PID 1, booted with systemd-nspawn (shared/recipes says how).

The host runs no systemd, so the container gets its own cgroup subtree and is reached with
``nsenter`` into its PID 1. It shares the host's network: a service inside answers on
127.0.0.1 from here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.env import manifest

CGROUPS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


class Container:
    def __init__(self, pid1: int) -> None:
        self.pid1 = pid1

    def run(self, command: str, *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``command`` by /bin/sh in the container (all its namespaces, as root)."""
        r = subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "/bin/sh", "-c", command], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"in the container, `{command}` exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def wait_for(self, command: str, timeout: float = 60) -> str:
        """Run ``command`` until it succeeds (a state reached), at most ``timeout`` s; its output."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.run(command, check=False)
            if r.returncode == 0:
                return r.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"`{command}` never succeeded: {r.stdout}{r.stderr}")
            time.sleep(0.2)  # polling a state inside another machine: there is no event to wait on


def _can_boot(suite: str) -> str | None:
    rootfs = manifest().get("rootfs" if suite == "bookworm" else f"rootfs_{suite}")
    if os.geteuid() != 0 or not rootfs or not shutil.which("systemd-nspawn"):
        return None
    if not all(c.is_dir() for c in CGROUPS):
        return None
    return str(rootfs)


@contextmanager
def booted(tmp: Path, binds: dict[str, str], suite: str = "bookworm") -> Iterator[Container]:
    """Boot the provisioned root filesystem of Debian ``suite`` (bookworm, trixie); ``binds``: host
    path -> container path, read-only."""
    rootfs = _can_boot(suite)
    if rootfs is None:
        pytest.skip("booting a systemd container needs root, systemd-nspawn and the provisioned root filesystem "
                    "(scripts/setup-backends makes it when run as root)")
    root = tmp / "root"
    root.mkdir()
    with tarfile.open(rootfs) as t:
        t.extractall(root, filter="fully_trusted")  # a whole OS: owners, devices and links as they are
    unique = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
    name = f"hal0-e2e-{unique}"
    cgroups = [c / name for c in CGROUPS]
    for c in cgroups:
        c.mkdir()
    argv = ["systemd-nspawn", "-q", "-D", str(root), "-M", f"hal0t{unique}", "--boot", "--register=no", "--keep-unit",
            "--console=pipe", *(f"--bind-ro={h}:{c}" for h, c in binds.items())]
    enter = "; ".join(f"echo $$ > {c}/cgroup.procs" for c in cgroups)
    log = (tmp / "console.log").open("wb")
    nspawn = subprocess.Popen(["/bin/sh", "-c", f"{enter}; exec {shlex.join(argv)}"], stdin=subprocess.DEVNULL,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            pid1 = _pid1(nspawn.pid)
        except AssertionError as e:
            raise AssertionError(f"{e}; nspawn said: {(tmp / 'console.log').read_text()[-2000:]}") from None
        box = Container(pid1)
        box.wait_for("test -S /run/systemd/private", timeout=30)
        box.run("systemctl is-system-running --wait", check=False, timeout=60)
        yield box
    finally:
        nspawn.terminate()  # a clean poweroff
        try:
            nspawn.wait(60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
        log.close()
        for c in cgroups:
            for d in sorted((p for p in c.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            c.rmdir()
        shutil.rmtree(root, ignore_errors=True)


def _pid1(nspawn: int) -> int:
    """The container's init: a child of nspawn named systemd, in another pid namespace."""
    own = Path("/proc/self/ns/pid").readlink()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{nspawn}/task").glob("*/children"):
            for child in task.read_text().split():
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd" and \
                            Path(f"/proc/{child}/ns/pid").readlink() != own:
                        return int(child)
                except OSError:
                    continue
        time.sleep(0.05)
    raise AssertionError("the container's systemd did not start")
