"""The hardware probe: what this box has, read from sysfs, /dev and /proc under a root path.

Readers take ``root`` so tests run on recorded trees (tests/fixtures/hw). Every value that
cannot be read is ``None``: nothing is guessed, and no unreadable or odd file stops the probe.
PCI display controllers (class 0x03xxxx) are enumerated as well as DRM cards, because a
headless server GPU (an H100 under the ``nvidia`` driver without nvidia-drm) has no DRM card
at all. NVIDIA memory comes from ``nvidia-smi`` only when it is there.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "probe", "run_nvidia_smi"]

SCHEMA = 1
VENDORS = {"0x1002": "amd", "0x10de": "nvidia", "0x8086": "intel"}
CPU_ICDS = ("lvp", "lavapipe", "swiftshader")  # Vulkan drivers that run on the CPU
ICD_DIRS = ("usr/share/vulkan/icd.d", "etc/vulkan/icd.d", "usr/local/share/vulkan/icd.d",
            "usr/local/nvidia/share/vulkan/icd.d")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text, base) if text is not None else None
    except ValueError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return path.readlink().name
    except OSError:
        return None


def run_nvidia_smi() -> str | None:
    """``nvidia-smi``'s CSV (bus id, name, MiB, driver), or None when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=pci.bus_id,name,memory.total,driver_version",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _nvidia_smi_rows(text: str | None) -> dict[str, dict[str, Any]]:
    rows = {}
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            bus = parts[0].lower()[-12:]  # "00000000:00:06.0" -> "0000:00:06.0"
            mib = _int(parts[2])
            rows[bus] = {"name": parts[1], "vram_bytes": mib * 1024 * 1024 if mib is not None else None,
                         "driver_version": parts[3]}
    return rows


def _drm_nodes_sysfs(root: Path) -> list[tuple[str, str]]:
    """(node name, PCI address) of every DRM card and render node, from /sys/class/drm."""
    drm = root / "sys/class/drm"
    nodes = []
    for node in sorted(drm.iterdir()) if drm.is_dir() else []:
        pci = _link_name(node / "device")
        if pci is not None:
            nodes.append((node.name, pci))
    return nodes


def _drm_nodes_udev() -> list[tuple[str, str]] | None:
    """The same through udev (pyudev + libudev); None when either is missing."""
    try:
        import pyudev

        context = pyudev.Context()
        return sorted((d.sys_name, d.parent.sys_name) for d in context.list_devices(subsystem="drm")
                      if d.parent is not None and d.parent.subsystem == "pci")
    except Exception:  # ImportError, or libudev that cannot be loaded or read
        return None


def _drm_cards(nodes: list[tuple[str, str]]) -> dict[str, dict[str, str | None]]:
    """PCI address -> its DRM card and render node (connectors like card0-DP-1 are skipped)."""
    out: dict[str, dict[str, str | None]] = {}
    for name, pci in nodes:
        if name.startswith("card") and "-" not in name:
            out.setdefault(pci, {"drm_card": name, "render_node": None})["drm_card"] = name
    for name, pci in nodes:
        if name.startswith("renderD") and pci in out:
            out[pci]["render_node"] = name
    return out


def _gpus(root: Path, smi: dict[str, dict[str, Any]], drm: list[tuple[str, str]]) -> list[dict[str, Any]]:
    cards = _drm_cards(drm)
    gpus = []
    devices = root / "sys/bus/pci/devices"
    for dev in sorted(devices.iterdir()) if devices.is_dir() else []:
        cls = _read(dev / "class")
        if cls is None or not cls.startswith("0x03"):
            continue
        vendor_id = _read(dev / "vendor")
        vendor = VENDORS.get(vendor_id or "")
        boot_vga = _read(dev / "boot_vga")
        info = _read(root / f"proc/driver/nvidia/gpus/{dev.name}/information") or ""
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model:")), None)
        gpu: dict[str, Any] = {
            "pci": dev.name, "vendor_id": vendor_id, "vendor": vendor, "device_id": _read(dev / "device"),
            "class": cls, "driver": _link_name(dev / "driver"),
            "boot_vga": None if boot_vga is None else boot_vga == "1",
            "drm_card": cards.get(dev.name, {}).get("drm_card"),
            "render_node": cards.get(dev.name, {}).get("render_node"),
            "name": model or smi.get(dev.name, {}).get("name"),
            "vram_bytes": _int(_read(dev / "mem_info_vram_total")) if vendor == "amd" else
            smi.get(dev.name, {}).get("vram_bytes"),
            "gtt_bytes": _int(_read(dev / "mem_info_gtt_total")) if vendor == "amd" else None,
        }
        gpus.append(gpu)
    return gpus


def _primary(gpus: list[dict[str, Any]]) -> str | None:
    """The GPU hal0 seeds for: AMD or NVIDIA before Intel, then the most memory, then boot_vga."""
    if not gpus:
        return None
    rank = {"nvidia": 2, "amd": 2, "intel": 1}

    def key(g: dict[str, Any]) -> tuple[int, int, bool]:
        return rank.get(g["vendor"] or "", 0), (g["vram_bytes"] or 0) + (g["gtt_bytes"] or 0), bool(g["boot_vga"])
    return str(max(gpus, key=key)["pci"])


def _vulkan(root: Path) -> dict[str, Any]:
    icds = []
    for d in ICD_DIRS:
        for f in sorted((root / d).glob("*.json")) if (root / d).is_dir() else []:
            try:
                lib = json.loads(f.read_text())["ICD"]["library_path"]
            except (OSError, ValueError, KeyError, TypeError):
                lib = None
            kind = "cpu" if any(c in f.name.lower() or c in str(lib).lower() for c in CPU_ICDS) else "gpu"
            icds.append({"file": "/" + str(f.relative_to(root)), "library": lib, "kind": kind})
    return {"icds": icds, "gpu": any(i["kind"] == "gpu" for i in icds)}


def _npus(root: Path) -> list[dict[str, Any]]:
    out = []
    accel = root / "sys/class/accel"
    for node in sorted(accel.glob("accel*")) if accel.is_dir() else []:
        pci = _link_name(node / "device")
        driver = _link_name(root / "sys/bus/pci/devices" / pci / "driver") if pci else None
        out.append({"node": node.name, "pci": pci, "driver": driver})
    return out


def _cpu(root: Path) -> dict[str, Any]:
    text = _read(root / "proc/cpuinfo") or ""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    first = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in blocks[0].splitlines())) \
        if blocks else {}
    physical = {(b.split("physical id")[1].split("\n")[0] if "physical id" in b else "0") for b in blocks}
    cores = _int(first.get("cpu cores"))
    flags = set(first.get("flags", "").split())
    return {"model": first.get("model name"), "threads": len(blocks) or None,
            "cores": cores * len(physical) if cores is not None else None,
            "flags": {f: f in flags for f in ("avx2", "avx512f", "amx_tile")} if flags else None}


def _memory(root: Path) -> dict[str, Any]:
    total = None
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            kb = _int(line.split()[1]) if len(line.split()) > 1 else None
            total = kb * 1024 if kb is not None else None
    limit = _read(root / "sys/fs/cgroup/memory.max") or _read(root / "sys/fs/cgroup/memory/memory.limit_in_bytes")
    limit_bytes = _int(limit)
    if limit_bytes is not None and total is not None and limit_bytes >= total:
        limit_bytes = None  # "no limit" spelled as a huge number
    return {"total_bytes": total, "cgroup_limit_bytes": limit_bytes}


def probe(root: Path = Path("/"), *, nvidia_smi: Callable[[], str | None] | None = None,
          disk: Path | None = None) -> dict[str, Any]:
    """The hardware snapshot (hardware.json) of the tree at ``root``.

    ``nvidia_smi`` returns nvidia-smi's CSV (default: run it when on PATH, only for root "/");
    ``disk`` is the folder whose free space is reported.
    """
    if nvidia_smi is None:
        nvidia_smi = run_nvidia_smi if root == Path("/") else (
            lambda: _read(root / "hal0-recorded/nvidia-smi.csv"))
    smi_text = nvidia_smi()
    smi = _nvidia_smi_rows(smi_text)
    udev = _drm_nodes_udev() if root == Path("/") else None
    gpus = _gpus(root, smi, udev if udev is not None else _drm_nodes_sysfs(root))
    nvidia_version = next((r["driver_version"] for r in smi.values()), None)
    free = None
    if disk is not None:
        try:
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = None
    return {
        "schema": SCHEMA,
        "source": "pyudev" if udev is not None else "sysfs",
        "kernel": _read(root / "proc/sys/kernel/osrelease"),
        "arch": platform.machine() if root == Path("/") else None,
        "cpu": _cpu(root),
        "memory": _memory(root),
        "disk": {"path": str(disk) if disk else None, "free_bytes": free},
        "gpus": gpus,
        "primary_gpu": _primary(gpus),
        "rocm": {"kfd": (root / "dev/kfd").exists()},
        "nvidia": {"devices": (root / "dev/nvidia0").exists() or (root / "dev/nvidiactl").exists(),
                   "driver_version": nvidia_version, "nvidia_smi": smi_text is not None},
        "vulkan": _vulkan(root),
        "npu": {"devices": _npus(root),
                "xdna": any(n["driver"] == "amdxdna" for n in _npus(root))},
    }
