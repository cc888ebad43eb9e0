"""Constructed sysfs/dev/proc trees for boxes nobody lent us, written the way the kernel lays
them out. The H100 and CPU-VM trees in tests/fixtures/hw were recorded on real machines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

GiB = 2**30


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def _cpu(root: Path, model: str, threads: int, cores: int, flags: str, mem_kb: int) -> None:
    write(root, {
        "proc/cpuinfo": "".join(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: 0\n"
                                f"cpu cores\t: {cores}\nflags\t\t: {flags}\n\n" for i in range(threads)),
        "proc/meminfo": f"MemTotal:       {mem_kb} kB\n", "proc/sys/kernel/osrelease": "6.14.0-generic\n"})


def _gpu(root: Path, pci: str, vendor: str, device: str, driver: str, card: str | None, render: str | None,
         extra: dict[str, str] | None = None, cls: str = "0x030000") -> None:
    dev = f"sys/bus/pci/devices/{pci}"
    write(root, {f"{dev}/vendor": vendor + "\n", f"{dev}/device": device + "\n", f"{dev}/class": cls + "\n",
                 **{f"{dev}/{k}": v for k, v in (extra or {}).items()}})
    link(root, f"{dev}/driver", f"../../drivers/{driver}")
    for node in (card, render):
        if node:
            link(root, f"sys/class/drm/{node}/device", f"../../../bus/pci/devices/{pci}")
    if card:
        write(root, {f"sys/class/drm/{card}-DP-1/status": "connected\n", f"dev/dri/{card}": ""})


def _icd(root: Path, name: str, library: str) -> None:
    write(root, {f"usr/share/vulkan/icd.d/{name}": json.dumps({"ICD": {"library_path": library}})})


def strix_halo(root: Path) -> None:
    """A Ryzen AI Max+ 395: an AMD iGPU with a small VRAM carve-out and a large GTT, an XDNA NPU."""
    _cpu(root, "AMD RYZEN AI MAX+ 395 w/ Radeon 8060S", 32, 16, "fpu avx2 avx512f", 131072000)
    _gpu(root, "0000:c5:00.0", "0x1002", "0x1586", "amdgpu", "card1", "renderD128",
         {"boot_vga": "1\n", "mem_info_vram_total": str(512 * 2**20), "mem_info_gtt_total": str(96 * GiB)})
    write(root, {"sys/bus/pci/devices/0000:c6:00.1/vendor": "0x1022\n",
                 "sys/bus/pci/devices/0000:c6:00.1/class": "0x118000\n", "dev/kfd": "", "dev/accel/accel0": ""})
    link(root, "sys/bus/pci/devices/0000:c6:00.1/driver", "../../drivers/amdxdna")
    link(root, "sys/class/accel/accel0/device", "../../../bus/pci/devices/0000:c6:00.1")
    _icd(root, "radeon_icd.x86_64.json", "libvulkan_radeon.so")
    _icd(root, "lvp_icd.x86_64.json", "libvulkan_lvp.so")


def rx7900xtx(root: Path) -> None:
    """A desktop with an RX 7900 XTX (24 GiB) beside the CPU's own small iGPU, ROCm installed."""
    _cpu(root, "AMD Ryzen 9 7950X 16-Core Processor", 32, 16, "fpu avx2 avx512f", 65536000)
    _gpu(root, "0000:03:00.0", "0x1002", "0x744c", "amdgpu", "card0", "renderD128",
         {"boot_vga": "1\n", "mem_info_vram_total": str(24 * GiB), "mem_info_gtt_total": str(31 * GiB)})
    _gpu(root, "0000:13:00.0", "0x1002", "0x164e", "amdgpu", "card1", "renderD129",
         {"boot_vga": "0\n", "mem_info_vram_total": str(512 * 2**20), "mem_info_gtt_total": str(31 * GiB)})
    write(root, {"dev/kfd": ""})
    _icd(root, "radeon_icd.x86_64.json", "libvulkan_radeon.so")


def rtx4090(root: Path) -> None:
    """A desktop with an RTX 4090 under nvidia + nvidia-drm, nvidia-smi answering."""
    _cpu(root, "Intel(R) Core(TM) i9-14900K", 32, 24, "fpu avx2", 131072000)
    _gpu(root, "0000:01:00.0", "0x10de", "0x2684", "nvidia", "card0", "renderD128", {"boot_vga": "1\n"})
    write(root, {"dev/nvidia0": "", "dev/nvidiactl": "",
                 "proc/driver/nvidia/gpus/0000:01:00.0/information": "Model: \t\t NVIDIA GeForce RTX 4090\n",
                 "hal0-recorded/nvidia-smi.csv": "00000000:01:00.0, NVIDIA GeForce RTX 4090, 24564, 580.95.05\n"})
    _icd(root, "nvidia_icd.json", "libGLX_nvidia.so.0")


def intel_arc(root: Path) -> None:
    """An Arc A770 under xe: no VRAM file the probe knows, so its memory is unknown (null)."""
    _cpu(root, "Intel(R) Core(TM) Ultra 7 265K", 20, 20, "fpu avx2", 32768000)
    _gpu(root, "0000:03:00.0", "0x8086", "0x56a0", "xe", "card0", "renderD128", {"boot_vga": "1\n"})
    _icd(root, "intel_icd.x86_64.json", "libvulkan_intel.so")


def lxc(root: Path) -> None:
    """An LXC container: the host's CPU and memory in /proc, a 16 GiB cgroup limit, no devices."""
    _cpu(root, "AMD EPYC 7763 64-Core Processor", 128, 64, "fpu avx2", 528000000)
    write(root, {"sys/fs/cgroup/memory.max": str(16 * GiB) + "\n"})


BOXES: dict[str, Callable[[Path], None]] = {
    "strix-halo": strix_halo, "rx7900xtx": rx7900xtx, "rtx4090": rtx4090, "intel-arc": intel_arc, "lxc": lxc,
}
