"""The hardware probe on recorded and constructed trees (SPEC section 7)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from hal0.hardware import probe
from tests.helpers.env import HAL0, hal0_env

FIXTURES = Path(__file__).parent / "fixtures" / "hw"
GiB = 2**30


def test_h100_tree_gives_what_the_probe_reported_on_the_real_machine() -> None:
    """Recorded on a lent H100 box: no /sys/class/drm, no /dev/dri, a PCI 3D controller (0x0302)
    under the nvidia driver, /dev/nvidia*, /proc/driver/nvidia and nvidia-smi."""
    live = json.loads((FIXTURES / "h100/hal0-recorded/probe.json").read_text())
    recorded = probe(FIXTURES / "h100")
    assert {k: v for k, v in recorded.items() if k != "arch"} == {k: v for k, v in live.items() if k != "arch"}
    (gpu,) = recorded["gpus"]
    assert (gpu["vendor"], gpu["class"], gpu["driver"], gpu["drm_card"]) == ("nvidia", "0x030200", "nvidia", None)
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["vram_bytes"] == 81559 * 2**20
    assert recorded["primary_gpu"] == gpu["pci"] and recorded["nvidia"]["driver_version"] == "580.159.04"


def test_cpu_only_vm() -> None:
    hw = probe(FIXTURES / "cpu-vm")
    assert hw["gpus"] == [] and hw["primary_gpu"] is None
    assert hw["cpu"]["model"] == "AMD EPYC" and hw["cpu"]["threads"] == 2
    assert hw["vulkan"] == {"icds": [], "gpu": False} and hw["nvidia"]["devices"] is False


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def strix_halo(root: Path) -> None:
    """A Ryzen AI Max+ 395: an AMD iGPU with a small VRAM carve-out and a large GTT, an XDNA NPU."""
    gpu, npu = "sys/bus/pci/devices/0000:c5:00.0", "sys/bus/pci/devices/0000:c6:00.1"
    write(root, {
        f"{gpu}/vendor": "0x1002\n", f"{gpu}/device": "0x1586\n", f"{gpu}/class": "0x030000\n",
        f"{gpu}/boot_vga": "1\n", f"{gpu}/mem_info_vram_total": str(512 * 2**20),
        f"{gpu}/mem_info_gtt_total": str(96 * GiB), f"{npu}/vendor": "0x1022\n", f"{npu}/class": "0x118000\n",
        "sys/class/drm/card1/dev": "226:1\n", "sys/class/drm/card1-DP-1/status": "connected\n",
        "dev/kfd": "", "dev/accel/accel0": "", "proc/sys/kernel/osrelease": "6.14.0\n",
        "proc/meminfo": "MemTotal:       131072000 kB\n",
        "proc/cpuinfo": "".join(
            f"processor\t: {i}\nmodel name\t: AMD RYZEN AI MAX+ 395 w/ Radeon 8060S\n"
            "physical id\t: 0\ncpu cores\t: 16\nflags\t\t: fpu avx2 avx512f\n\n" for i in range(32)),
        "usr/share/vulkan/icd.d/radeon_icd.x86_64.json": json.dumps({"ICD": {"library_path": "libvulkan_radeon.so"}}),
        "usr/share/vulkan/icd.d/lvp_icd.x86_64.json": json.dumps({"ICD": {"library_path": "libvulkan_lvp.so"}}),
    })
    link(root, f"{gpu}/driver", "../../drivers/amdgpu")
    link(root, f"{npu}/driver", "../../drivers/amdxdna")
    link(root, "sys/class/drm/card1/device", "../../../bus/pci/devices/0000:c5:00.0")
    link(root, "sys/class/drm/renderD128/device", "../../../bus/pci/devices/0000:c5:00.0")
    link(root, "sys/class/accel/accel0/device", "../../../bus/pci/devices/0000:c6:00.1")


def test_strix_halo_keeps_vram_and_gtt_apart_and_finds_the_npu(tmp_path: Path) -> None:
    strix_halo(tmp_path)
    hw: dict[str, Any] = probe(tmp_path)
    (gpu,) = hw["gpus"]
    assert (gpu["vendor"], gpu["driver"], gpu["drm_card"], gpu["render_node"]) == ("amd", "amdgpu", "card1",
                                                                                   "renderD128")
    assert (gpu["vram_bytes"], gpu["gtt_bytes"], gpu["boot_vga"]) == (512 * 2**20, 96 * GiB, True)
    assert hw["rocm"]["kfd"] is True and hw["npu"]["xdna"] is True
    assert hw["npu"]["devices"] == [{"node": "accel0", "pci": "0000:c6:00.1", "driver": "amdxdna"}]
    assert [i["kind"] for i in hw["vulkan"]["icds"]] == ["cpu", "gpu"]  # lavapipe counts as CPU
    assert hw["cpu"] == {"model": "AMD RYZEN AI MAX+ 395 w/ Radeon 8060S", "threads": 32, "cores": 16,
                         "flags": {"avx2": True, "avx512f": True, "amx_tile": False}}


def test_odd_and_unreadable_files_become_null(tmp_path: Path) -> None:
    dev = "sys/bus/pci/devices/0000:03:00.0"
    write(tmp_path, {f"{dev}/vendor": "0xabcd\n", f"{dev}/class": "0x030000\n",
                     f"{dev}/mem_info_vram_total": "lots\n", "proc/meminfo": "MemTotal: many kB\n",
                     "usr/share/vulkan/icd.d/broken.json": "{not json"})
    (tmp_path / dev / "device").mkdir()  # a folder where a file belongs: unreadable
    hw = probe(tmp_path)
    (gpu,) = hw["gpus"]
    assert (gpu["vendor"], gpu["device_id"], gpu["driver"], gpu["vram_bytes"]) == (None, None, None, None)
    assert hw["memory"]["total_bytes"] is None and hw["kernel"] is None
    assert hw["vulkan"]["icds"] == [{"file": "/usr/share/vulkan/icd.d/broken.json", "library": None,
                                     "kind": "gpu"}]
    assert probe(tmp_path / "does-not-exist")["gpus"] == []


def test_init_and_probe_apply_write_hardware_json(tmp_path: Path) -> None:
    env = hal0_env(tmp_path)
    subprocess.run([*HAL0, "init"], env=env, check=True, capture_output=True)
    hw = json.loads((tmp_path / "etc/hardware.json").read_text())
    assert hw["schema"] == 1 and hw["disk"]["free_bytes"] > 0
    out = subprocess.run([*HAL0, "probe"], env=env, check=True, capture_output=True, text=True).stdout
    assert "changed since" in out and out.splitlines()[0].startswith("cpu:")
    (tmp_path / "etc/hardware.json").unlink()
    subprocess.run([*HAL0, "probe", "--apply"], env=env, check=True, capture_output=True)
    assert json.loads((tmp_path / "etc/hardware.json").read_text())["schema"] == 1


def test_the_tier_table_seeds_each_box(tmp_path: Path) -> None:
    from hal0.hardware.seeding import match_tier, seed_slots

    h100 = probe(FIXTURES / "h100")
    assert match_tier(h100)["name"] == "nvidia-datacenter"
    seeds = seed_slots(h100)
    assert (seeds["primary"].slot.backend, seeds["img"].slot.backend, seeds["img"].slot.enabled) == (
        "cuda", "cuda", True)
    assert seeds["stt"].slot.provider == "moonshine" and seeds["stt"].slot.backend == "cpu"

    strix_halo(tmp_path / "strix")
    strix = probe(tmp_path / "strix")
    assert match_tier(strix)["name"] == "amd-apu-large"
    seeds = seed_slots(strix)
    assert (seeds["primary"].slot.backend, seeds["img"].slot.backend, seeds["img"].slot.enabled) == (
        "vulkan", "rocm", True)
    (tmp_path / "strix/dev/kfd").unlink()
    seeds = seed_slots(probe(tmp_path / "strix"))
    assert not seeds["img"].slot.enabled and "/dev/kfd is missing" in seeds["img"].reason

    cpu = seed_slots(probe(FIXTURES / "cpu-vm"))
    assert {s.slot.backend for n, s in cpu.items() if n in ("primary", "embed")} == {"cpu"}
    assert not cpu["img"].slot.enabled and "no usable GPU" in cpu["img"].reason
    assert all(s.slot.enabled for n, s in cpu.items() if n != "img")


def test_init_seeds_from_hardware_and_never_overwrites(tmp_path: Path) -> None:
    from hal0.bootstrap import init_tree
    from hal0.config import load_slots
    from hal0.paths import resolve_paths

    paths = resolve_paths({"HAL0_HOME": str(tmp_path / "home")})
    init_tree(paths, hardware=probe(FIXTURES / "h100"))
    slots = load_slots(paths)
    assert slots["primary"].backend == "cuda" and slots["primary"].model.default.startswith("qwen3-30b")
    paths.slot_toml("primary").write_text(paths.slot_toml("primary").read_text().replace("cuda", "vulkan"))
    init_tree(paths, hardware=probe(FIXTURES / "cpu-vm"))  # another box's seeds change nothing
    assert load_slots(paths)["primary"].backend == "vulkan"
    assert load_slots(paths)["img"].enabled is True
