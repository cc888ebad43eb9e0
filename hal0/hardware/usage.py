"""What a backend process tree really holds: resident memory from ``/proc`` and GPU memory where
the driver tells (NVIDIA through ``nvidia-smi``'s per-process query; AMD and Intel through the
``drm-*`` keys of ``/proc/<pid>/fdinfo``).

The readers take ``root`` (the folder ``proc/`` lives in) so tests run on fake trees; the
parsers are pure. Everything here blocks on small reads: call it off the event loop.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Usage", "drm_bytes", "gpu_used", "measure", "nvidia_apps", "nvidia_used", "parse_fdinfo",
           "parse_nvidia_apps", "parse_nvidia_used", "process_tree", "rss_bytes"]

_UNITS = {"": 1, "B": 1, "KiB": 1024, "kB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}
# DRM memory regions that are the CPU's own pages, not the GPU's (amdgpu's "cpu").
_HOST_REGIONS = frozenset({"cpu"})


@dataclass(frozen=True)
class Usage:
    """Bytes a backend holds; ``gpu_bytes`` None when no driver said (not the same as 0)."""

    rss_bytes: int
    gpu_bytes: int | None
    measured_at: float

    def to_json(self) -> dict[str, int | float | None]:
        return {"rss_bytes": self.rss_bytes, "gpu_bytes": self.gpu_bytes, "measured_at": self.measured_at}


def _stat(root: Path, pid: int) -> tuple[int, int] | None:
    """(ppid, pgrp) of ``pid`` from ``proc/<pid>/stat``; None when it is gone or unreadable."""
    try:
        text = (root / "proc" / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        return None


def process_tree(root: Path, pid: int) -> list[int]:
    """``pid``, its descendants and every process of its process group (a backend is started as
    a group leader, so its helpers stay in the group even when reparented), sorted."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in (root / "proc").iterdir() if (root / "proc").is_dir() else ():
        if entry.name.isdigit() and (st := _stat(root, int(entry.name))) is not None:
            stats[int(entry.name)] = st
    if pid not in stats:
        return []
    tree = {pid} | {p for p, (_, pgrp) in stats.items() if pgrp == pid}
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    todo = list(tree)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return sorted(tree)


def rss_bytes(root: Path, pids: Iterable[int]) -> int:
    """Resident memory (``VmRSS``) summed over ``pids``; a process that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            text = (root / "proc" / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                parts = line.split()
                total += int(parts[1]) * _UNITS.get(parts[2] if len(parts) > 2 else "kB", 1024)
                break
    return total


def parse_fdinfo(text: str) -> tuple[str | None, dict[str, int]]:
    """One fdinfo file: its ``drm-client-id`` and GPU bytes per memory region (``drm-total-R``
    where the driver gives it, else ``drm-memory-R``); (None, {}) for a file that is no DRM client."""
    client: str | None = None
    total: dict[str, int] = {}
    memory: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, parts = key.strip(), value.split()
        if key == "drm-client-id" and parts:
            client = parts[0]
            continue
        for prefix, into in (("drm-total-", total), ("drm-memory-", memory)):
            if key.startswith(prefix) and parts and parts[0].isdigit():
                unit = parts[1] if len(parts) > 1 else ""
                into[key[len(prefix):]] = int(parts[0]) * _UNITS.get(unit, 1)
    return client, {**memory, **total}


def drm_bytes(root: Path, pids: Iterable[int]) -> int | None:
    """GPU memory the DRM driver accounts to ``pids`` (AMD, Intel), counting each DRM client once
    (one client is often open on several descriptors) and leaving out host regions; None when no
    descriptor of theirs is a DRM client."""
    seen: dict[tuple[int, str], int] = {}
    found = False
    for pid in pids:
        folder = root / "proc" / str(pid) / "fdinfo"
        try:
            files = list(folder.iterdir())
        except OSError:
            continue
        for f in files:
            try:
                client, regions = parse_fdinfo(f.read_text())
            except OSError:
                continue
            if client is None:
                continue
            found = True
            seen[(pid, client)] = sum(v for r, v in regions.items() if r not in _HOST_REGIONS)
    # The same client id seen through two processes (a forked helper) is one allocation.
    by_client: dict[str, int] = {}
    for (_, client), n in seen.items():
        by_client[client] = max(by_client.get(client, 0), n)
    return sum(by_client.values()) if found else None


def parse_nvidia_apps(text: str) -> dict[int, int]:
    """``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits``: bytes per
    pid (summed over GPUs). Rows the driver could not fill (``[N/A]``) are left out."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        out[int(parts[0])] = out.get(int(parts[0]), 0) + int(parts[1]) * (1 << 20)
    return out


def nvidia_apps() -> dict[int, int] | None:
    """GPU bytes per pid from ``nvidia-smi``; None when there is no nvidia-smi or it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_apps(done.stdout) if done.returncode == 0 else None


def measure(pid: int, root: Path = Path("/"), *,
            nvidia: Callable[[], dict[int, int] | None] = nvidia_apps) -> Usage | None:
    """What the process tree of ``pid`` holds now; None when ``pid`` is gone."""
    pids = process_tree(root, pid)
    if not pids:
        return None
    gpu = drm_bytes(root, pids)
    apps = nvidia()
    if apps:
        mine = [apps[p] for p in pids if p in apps]
        if mine:
            gpu = (gpu or 0) + sum(mine)
    return Usage(rss_bytes(root, pids), gpu, time.time())


def parse_nvidia_used(text: str) -> dict[str, tuple[int, int]]:
    """``nvidia-smi --query-gpu=pci.bus_id,memory.used,memory.total --format=csv,noheader,nounits``:
    (used, total) bytes by PCI address as sysfs spells it (``0000:00:06.0``)."""
    out = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out[parts[0].lower()[-12:]] = (int(parts[1]) << 20, int(parts[2]) << 20)
    return out


def nvidia_used() -> dict[str, tuple[int, int]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=pci.bus_id,memory.used,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_used(done.stdout) if done.returncode == 0 else None


def gpu_used(pci: str, root: Path = Path("/"), *,
             nvidia: Callable[[], dict[str, tuple[int, int]] | None] = nvidia_used) -> tuple[int, int] | None:
    """(used, total) bytes of the GPU at ``pci``, by every process: AMD's sysfs counters (VRAM, plus
    GTT on an APU whose VRAM is a small carve-out), else ``nvidia-smi``; None when neither says."""
    dev = root / "sys/bus/pci/devices" / pci

    def read(name: str) -> int | None:
        try:
            return int((dev / name).read_text().strip())
        except (OSError, ValueError):
            return None
    vram_used, vram_total = read("mem_info_vram_used"), read("mem_info_vram_total")
    if vram_used is not None and vram_total:
        gtt_used, gtt_total = read("mem_info_gtt_used"), read("mem_info_gtt_total")
        if vram_total < 4 << 30 and gtt_used is not None and gtt_total:  # an APU: GTT is most of its memory
            return vram_used + gtt_used, vram_total + gtt_total
        return vram_used, vram_total
    return (nvidia() or {}).get(pci)
