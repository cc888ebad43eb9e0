"""The hardware probe on recorded and constructed trees (SPEC section 7)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hal0.hardware import probe
from hal0.hardware.flavors import Toolchains
from hal0.hardware.seeding import match_tier, seed_slots
from tests.helpers.env import HAL0, hal0_env
from tests.helpers.hwtrees import BOXES, strix_halo, write

FIXTURES = Path(__file__).parent / "fixtures" / "hw"
CUDA = Toolchains(nvcc="/usr/local/cuda/bin/nvcc")  # a box with the CUDA toolkit (tests/test_llamacpp.py: one without)
GOLDEN = FIXTURES / "golden"
GiB = 2**30


@pytest.mark.parametrize("box", sorted(BOXES))
def test_each_box_gives_its_golden_hardware_json(box: str, tmp_path: Path) -> None:
    """tests/fixtures/hw/golden/<box>.json is the reviewed expectation (rewrite it only on purpose)."""
    BOXES[box](tmp_path)
    got = probe(tmp_path)
    assert got == json.loads((GOLDEN / f"{box}.json").read_text())


def test_golden_seeds() -> None:
    """What each box gets at install time, in one table."""
    from hal0.hardware.seeding import match_tier, seed_slots

    def tier_of(box: str) -> tuple[str, str, bool]:
        hw = json.loads((GOLDEN / f"{box}.json").read_text())
        seeds = seed_slots(hw, CUDA)
        return match_tier(hw)["name"], seeds["primary"].slot.backend, seeds["img"].slot.enabled
    assert {box: tier_of(box) for box in sorted(BOXES)} == {
        "intel-arc": ("cpu", "cpu", False),  # memory unknown: no GPU tier can be proven
        "lxc": ("cpu", "cpu", False),
        "rtx4090": ("nvidia-desktop", "cuda", True),
        "rx7900xtx": ("amd-desktop", "vulkan", True),
        "strix-halo": ("amd-apu-large", "vulkan", True),
    }


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


def test_h200_tree_gives_what_the_probe_reported_on_the_real_machine() -> None:
    """Recorded on the lent H200 box (scripts/dev/record-hw-tree) the day `scripts/gpu-check` ran
    there; probe.json is what `hal0 init` wrote on that box (with pyudev, and a disk to look at).
    The same shape as the H100's, a newer device id and 141 GB."""
    live = json.loads((FIXTURES / "h200/hal0-recorded/probe.json").read_text())
    recorded = probe(FIXTURES / "h200")
    skip = {"arch", "disk", "source"}  # the recording has no statvfs or udev; both are the box's own
    assert {k: v for k, v in recorded.items() if k not in skip} == {k: v for k, v in live.items() if k not in skip}
    (gpu,) = recorded["gpus"]
    assert (gpu["name"], gpu["device_id"], gpu["vram_bytes"], gpu["render_node"]) == (
        "NVIDIA H200", "0x2335", 143771 * 2**20, None)
    assert match_tier(recorded)["name"] == "nvidia-datacenter"
    seeds = seed_slots(recorded, CUDA)
    assert (seeds["primary"].slot.backend, seeds["primary"].slot.server.parallel, seeds["primary"].slot.pinned) == (
        "cuda", 8, True)
    # What the box got without a CUDA toolkit found: the tier's Vulkan fallback, never a silent CPU.
    assert seed_slots(recorded, Toolchains())["primary"].slot.backend == "vulkan"


def test_cpu_only_vm() -> None:
    hw = probe(FIXTURES / "cpu-vm")
    assert hw["gpus"] == [] and hw["primary_gpu"] is None
    assert hw["cpu"]["model"] == "AMD EPYC" and hw["cpu"]["threads"] == 2
    assert hw["vulkan"] == {"icds": [], "gpu": False} and hw["nvidia"]["devices"] is False


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
    seeds = seed_slots(h100, CUDA)
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
    init_tree(paths, hardware=probe(FIXTURES / "h100"), toolchains=CUDA)
    slots = load_slots(paths)
    assert slots["primary"].backend == "cuda" and slots["primary"].model.default.startswith("qwen3-30b")
    paths.slot_toml("primary").write_text(paths.slot_toml("primary").read_text().replace("cuda", "vulkan"))
    init_tree(paths, hardware=probe(FIXTURES / "cpu-vm"))  # another box's seeds change nothing
    assert load_slots(paths)["primary"].backend == "vulkan"
    assert load_slots(paths)["img"].enabled is True


def test_a_live_probe_enumerates_through_udev_and_agrees_with_sysfs() -> None:
    from hal0.hardware.probe import _drm_nodes_sysfs, _drm_nodes_udev

    assert probe()["source"] == "pyudev"  # pyudev is a runtime dependency; libudev ships with Debian
    assert _drm_nodes_udev() == _drm_nodes_sysfs(Path("/"))
