"""`hal0 backend install llama-server`: the flavor each recorded box gets, what real llama-server
binaries print about their devices, and a real install of the prebuilt build from the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hal0.hardware import probe
from hal0.hardware.flavors import Toolchains, choose
from hal0.hardware.seeding import seed_slots
from hal0.llamacpp.build import PREBUILT, parse_progress, smoke
from hal0.llamacpp.devices import (
    NVIDIA_VULKAN_PACKAGES,
    gpu_devices,
    list_devices,
    nvidia_vulkan_problem,
    parse_devices,
    parse_version,
    run,
)
from hal0.llamacpp.tinymodel import write_tiny_llama
from hal0.models.gguf import read_gguf
from tests.helpers.env import HAL0, hal0_env, manifest

HW = Path(__file__).parent / "fixtures" / "hw"
CUDA = Toolchains(nvcc="/usr/local/cuda/bin/nvcc")
ROCM = Toolchains(hipcc="/opt/rocm/bin/hipcc")


def box(name: str) -> dict[str, Any]:
    if name in ("h100", "h200", "cpu-vm"):
        return probe(HW / name)
    return json.loads((HW / "golden" / f"{name}.json").read_text())  # type: ignore[no-any-return]


def without_vulkan(hw: dict[str, Any]) -> dict[str, Any]:
    return {**hw, "vulkan": {"icds": [], "gpu": False}}


def test_auto_picks_the_flavor_each_recorded_box_can_have() -> None:
    """What the tier table gave the llama-server slots: CUDA on an NVIDIA tier with the CUDA
    toolkit, else Vulkan wherever a GPU Vulkan driver is (NVIDIA's too), else the CPU; an explicit
    flavor the box cannot have says what to install."""
    cases = {
        ("h100", Toolchains()): "vulkan", ("h100", CUDA): "cuda", ("h200", CUDA): "cuda",
        ("rtx4090", Toolchains()): "vulkan",
        ("rtx4090", CUDA): "cuda", ("rx7900xtx", ROCM): "vulkan", ("strix-halo", Toolchains()): "vulkan",
        ("intel-arc", Toolchains()): "cpu", ("cpu-vm", CUDA): "cpu", ("lxc", Toolchains()): "cpu",
    }
    assert {k: choose("auto", box(k[0]), k[1]).flavor for k in cases} == cases
    for (name, tc), flavor in cases.items():  # the build that installs is the one the slots were written for
        assert seed_slots(box(name), tc)["primary"].slot.backend == flavor, name
    assert choose("auto", box("h100"), CUDA).why == "the nvidia-datacenter tier's backend: the CUDA toolkit " \
                                                    "(/usr/local/cuda/bin/nvcc)"
    assert "prefers cuda" in choose("auto", box("h100"), Toolchains()).why
    assert choose("auto", without_vulkan(box("h100")), CUDA).flavor == "cuda"
    no_driver = choose("auto", without_vulkan(box("h100")), Toolchains())
    assert no_driver.flavor == "cpu" and "no GPU Vulkan driver either" in no_driver.why
    assert choose("auto", box("intel-arc"), Toolchains()).why == \
        "the intel GPU (its memory unknown) falls to the cpu tier"  # the xe driver does not say
    small = choose("auto", without_vulkan(box("rx7900xtx")), ROCM)  # AMD tiers need the Vulkan driver
    assert small.flavor == "cpu" and small.why == "the amd GPU (24.0 GiB, no Vulkan driver) falls to the cpu tier"
    assert choose("cuda", box("h100"), CUDA).flavor == "cuda"
    with pytest.raises(ValueError, match=r"no CUDA toolkit \(nvcc\).*--flavor vulkan"):
        choose("cuda", box("h100"), Toolchains())
    with pytest.raises(ValueError, match="needs an AMD GPU with /dev/kfd"):
        choose("rocm", box("h100"), ROCM)
    with pytest.raises(ValueError, match="no GPU Vulkan driver"):
        choose("vulkan", box("cpu-vm"), Toolchains())


def test_a_cuda_tier_without_a_cuda_build_gets_vulkan_and_says_so() -> None:
    h100 = box("h100")
    seeds = seed_slots(h100, Toolchains())
    assert (seeds["primary"].slot.backend, seeds["embed"].slot.backend) == ("vulkan", "vulkan")
    assert "prefers cuda" in seeds["primary"].note and "uses vulkan" in seeds["primary"].note
    assert seeds["img"].slot.backend == "cuda" and seeds["img"].note == ""  # ComfyUI's torch is a CUDA build
    assert seed_slots(h100, CUDA)["primary"].slot.backend == "cuda"
    assert seed_slots(h100, CUDA)["primary"].note == ""
    no_vulkan = seed_slots(without_vulkan(h100), Toolchains())["primary"]
    assert no_vulkan.slot.backend == "cpu" and "uses cpu" in no_vulkan.note


def test_init_writes_the_note_in_the_slot(tmp_path: Path) -> None:
    from hal0.bootstrap import init_tree
    from hal0.config import load_slots
    from hal0.paths import resolve_paths

    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    init_tree(paths, hardware=box("h100"), toolchains=Toolchains())
    assert load_slots(paths)["primary"].backend == "vulkan"
    assert "# backend: the nvidia-datacenter tier prefers cuda" in paths.slot_toml("primary").read_text()


def test_devices_of_a_real_binary_without_a_gpu() -> None:
    """This machine's llama-server, run for real: it loads, and lists no device."""
    binary = Path(manifest()["llama_server"]["bin"])
    devices, ran = list_devices(binary)
    assert ran.code == 0 and "Available devices:" in ran.output and devices == []
    assert parse_version(run(binary, "--version").output) == "0.1.0-dev (build 1, commit 7e4c0a9)"


# llama.cpp's common_print_available_devices() (common/arg.cpp of the pinned source): non-CPU devices,
#     printf("  %s: %s (%zu MiB, %zu MiB free)\n", name, description, total / MiB, free / MiB);
# after "Available devices:", or "  (none)".
H200_WITH_GL = "Available devices:\n  Vulkan0: NVIDIA H200 (143771 MiB, 143247 MiB free)\n"


def test_an_nvidia_gpu_the_vulkan_build_does_not_list_is_an_error_naming_the_libraries() -> None:
    """What this machine's real binary prints when it sees no GPU device is what the Vulkan build
    prints on an NVIDIA box whose driver's ICD cannot load (no GL dispatch libraries)."""
    bare = parse_devices(run(Path(manifest()["llama_server"]["bin"]), "--list-devices").output)
    with_gl = parse_devices(H200_WITH_GL)
    assert [(d.name, d.description, d.total_mib, d.is_gpu) for d in with_gl] == [
        ("Vulkan0", "NVIDIA H200", 143771, True)]
    assert gpu_devices(bare) == []
    h100 = box("h100")
    problem = nvidia_vulkan_problem(h100, "vulkan", bare, ["libvulkan1", "libegl1"])
    assert problem is not None and "lists no GPU although the probe found the NVIDIA H100 80GB HBM3" in problem
    assert "(missing: libvulkan1, libegl1)" in problem and "apt-get install libvulkan1 libegl1" in problem
    assert " ".join(NVIDIA_VULKAN_PACKAGES) in str(nvidia_vulkan_problem(h100, "vulkan", bare, []))
    assert nvidia_vulkan_problem(h100, "vulkan", with_gl, []) is None
    assert nvidia_vulkan_problem(h100, "cpu", bare, []) is None
    assert nvidia_vulkan_problem(box("cpu-vm"), "vulkan", bare, []) is None
    amd = nvidia_vulkan_problem(box("rx7900xtx"), "vulkan", bare, [])
    assert amd is not None and "vulkaninfo --summary" in amd and "libvulkan1" not in amd


def test_a_lavapipe_device_is_not_a_gpu() -> None:
    text = "Available devices:\n  Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (7940 MiB, 7940 MiB free)\n"
    (d,) = parse_devices(text)
    assert d.description == "llvmpipe (LLVM 15.0.6, 256 bits)" and not d.is_gpu


def test_ninja_progress_lines() -> None:
    assert parse_progress("[12/345] Building CXX object ggml/src/ggml.c.o\n") == (12, 345)
    assert parse_progress("-- Configuring done") is None


def test_the_tiny_model_is_a_gguf_llama_server_answers(tmp_path: Path) -> None:
    write_tiny_llama(tmp_path / "t.gguf")
    info = read_gguf(tmp_path / "t.gguf")
    assert (info.architecture, info.block_count, info.vocab_size) == ("llama", 1, 36)
    binary = Path(manifest()["llama_server"]["bin"])
    assert smoke(binary, tmp_path / "t.gguf") is None
    (tmp_path / "bad.gguf").write_bytes(b"GGUF not really")
    assert smoke(binary, tmp_path / "bad.gguf").startswith("exited with ")  # type: ignore[union-attr]


def _home(tmp: Path, hw: dict[str, Any]) -> Path:
    """A home whose hardware.json is a recorded box, with the provisioned download in its cache."""
    (tmp / "etc").mkdir(parents=True)
    (tmp / "etc/hardware.json").write_text(json.dumps(hw))
    downloads = tmp / "var/backends/llama-server/downloads"
    downloads.mkdir(parents=True)
    cached = Path(manifest()["llama_server"]["downloads"]) / PREBUILT.filename
    try:
        os.link(cached, downloads / PREBUILT.filename)
    except OSError:
        shutil.copy(cached, downloads / PREBUILT.filename)
    return tmp


def hal0(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAL0, *args], env=hal0_env(home), capture_output=True, text=True, timeout=300)


def test_install_the_prebuilt_build_on_a_cpu_box_then_list_it(tmp_path: Path) -> None:
    home = _home(tmp_path, box("cpu-vm"))
    (home / "etc/hal0.toml").write_text("# mine\n[api]\nport = 8123  # my port\n")
    r = hal0(home, "backend", "install", "llama-server", "--no-apt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "llama-server flavor: cpu (no GPU)" in r.stdout and "checking that it runs here" in r.stdout
    text = (home / "etc/hal0.toml").read_text()
    assert text.startswith("# mine\n[api]\nport = 8123  # my port\n")  # the operator's file stays theirs
    settings = tomllib.loads(text)["providers"]["llama-server"]
    binary = home / "var/backends/llama-server/prebuilt-vulkan-0.10434.0/bin/llama-server"
    assert settings == {"bin": str(binary), "flavor": "cpu"}
    listed = json.loads(hal0(home, "backend", "list", "--json").stdout)["llama-server"]
    assert listed["flavor"] == "cpu" and listed["bin"] == str(binary)
    assert listed["version"] == "0.1.0-dev (build 1, commit 7e4c0a9)" and listed["source"] == PREBUILT.spec
    table = hal0(home, "backend", "list").stdout
    assert f"cpu, llama.cpp 0.1.0-dev (build 1, commit 7e4c0a9)  {binary}" in table

    again = hal0(home, "backend", "install", "llama-server", "--flavor", "cpu", "--no-apt")
    assert again.returncode == 0 and "is cached in" in again.stdout and "fetching" not in again.stdout


def test_an_nvidia_box_whose_vulkan_build_sees_no_gpu_is_not_done(tmp_path: Path) -> None:
    """The recorded H100 box on this GPU-less machine: the Vulkan build runs but lists no GPU, so
    the install fails naming the GL libraries, and hal0.toml is left as it was. (The flavor is
    named: ``auto`` there would build CUDA first wherever this machine has ``nvcc``.)"""
    home = _home(tmp_path, box("h100"))
    r = hal0(home, "backend", "install", "llama-server", "--flavor", "vulkan", "--no-apt")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "llama-server flavor: vulkan (asked for)" in r.stdout
    assert "lists no GPU although the probe found the NVIDIA H100 80GB HBM3 at 0000:00:06.0" in r.stderr
    assert "apt-get install" in r.stderr and "libvulkan1" in r.stderr and "Traceback" not in r.stderr
    assert not (home / "etc/hal0.toml").exists()


def test_a_fallback_to_vulkan_on_nvidia_gets_the_gl_libraries_too(tmp_path: Path) -> None:
    """auto on the recorded H100 box with the CUDA toolkit chooses cuda; when that build does not
    run, the prebuilt Vulkan one is next, and NVIDIA's Vulkan driver needs its GL libraries for it
    as much as for a first choice (with --no-apt: it says which are missing)."""
    from hal0.llamacpp import build as b
    from hal0.llamacpp.devices import missing_packages
    from hal0.llamacpp.install import build_dir, install
    from hal0.paths import resolve_paths

    home = _home(tmp_path, box("h100"))
    paths = resolve_paths({"HAL0_HOME": str(home)})
    cuda = build_dir(paths.backends_dir / "llama-server", "source", "cuda")
    cuda.mkdir(parents=True)
    b.write_marker(cuda, {"bin": str(cuda / "bin/llama-server"), "smoke": "exits 1", "source": "a failed build"})
    said: list[str] = []
    with pytest.raises(RuntimeError, match="lists no GPU although the probe found the NVIDIA H100"):
        install(paths, "auto", box("h100"), CUDA, said.append, apt=False)
    assert said[0].startswith("llama-server flavor: cuda (the nvidia-datacenter tier's backend")
    assert "the source cuda llama-server cannot be had here (exits 1); trying the next" in said
    assert any("NVIDIA's Vulkan driver needs" in line for line in said) == bool(missing_packages()), said


def test_whether_a_binary_sees_the_gpu_the_probe_found(tmp_path: Path) -> None:
    """What a slot's start checks: False (with what to install) only when the probe found a GPU and
    the binary answers without one; None when there is nothing to tell, which is never cached."""
    from hal0.llamacpp.devices import gpu_seen

    binary = Path(manifest()["llama_server"]["bin"])
    hw = tmp_path / "hardware.json"
    assert gpu_seen(binary, {}, "vulkan", hw).seen is None  # no hardware.json
    hw.write_text(json.dumps(box("cpu-vm")))
    assert gpu_seen(binary, {}, "vulkan", hw).seen is None  # no GPU found
    hw.write_text(json.dumps(box("h100")))
    unseen = gpu_seen(binary, {}, "vulkan", hw)
    assert unseen.seen is False and "NVIDIA's Vulkan driver needs the GL dispatch libraries" in unseen.problem
    cpu = gpu_seen(binary, {}, "cpu", hw)
    assert cpu.seen is False and "is a cpu build of llama-server and lists no GPU" in cpu.problem
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(binary, broken / "llama-server")  # without the libraries beside it: it does not start
    assert gpu_seen(broken / "llama-server", {}, "vulkan", hw).seen is None


def test_recording_the_binary_keeps_the_rest_of_hal0_toml(tmp_path: Path) -> None:
    from hal0.config import load_config
    from hal0.config.edit import set_provider
    from hal0.errors import ConfigInvalid
    from hal0.paths import resolve_paths

    paths = resolve_paths({"HAL0_HOME": str(tmp_path)})
    paths.config_dir.mkdir(parents=True)
    paths.hal0_toml.write_text('[providers.llama-server]  # mine\nbin = "/old"  # old one\nenv = { A = "1" }\n\n'
                               '[providers.whisper]\npython = "/w"\n')
    set_provider(paths, "llama-server", {"bin": '/new "quoted"', "flavor": "vulkan"})
    assert paths.hal0_toml.read_text() == (
        '[providers.llama-server]  # mine\nbin = "/new \\"quoted\\""\nenv = { A = "1" }\nflavor = "vulkan"\n\n'
        '[providers.whisper]\npython = "/w"\n')
    settings = load_config(paths).providers["llama-server"]
    assert (settings.bin, settings.flavor, settings.env) == ('/new "quoted"', "vulkan", {"A": "1"})
    with pytest.raises(ConfigInvalid, match="flavor: expected"):
        set_provider(paths, "llama-server", {"flavor": "metal"})  # never written
    paths.hal0_toml.write_text('providers.llama-server.bin = "/dotted"\n')
    with pytest.raises(ConfigInvalid, match="could not be updated in place"):
        set_provider(paths, "llama-server", {"bin": "/x"})
    assert paths.hal0_toml.read_text() == 'providers.llama-server.bin = "/dotted"\n'


def test_a_failed_build_is_said_in_one_line_with_its_error() -> None:
    from hal0.llamacpp.install import _first_error

    cmake = ("configuring llama.cpp (cuda) failed:\n-- Configuring done\n"
             "CMake Error in ggml/src/ggml-cuda/CMakeLists.txt:\n"
             "  CUDA_ARCHITECTURES is set to \"native\", but no GPU was detected.\n\nCMake Error at x:\n  other")
    assert _first_error(cmake) == ('configuring llama.cpp (cuda) failed: CUDA_ARCHITECTURES is set to "native", '
                                   'but no GPU was detected.')
    cc = "compiling llama-server (cuda) failed:\n[1/9] a.cu\nfoo.cu(3): error: identifier \"x\" is undefined\n"
    assert _first_error(cc) == 'compiling llama-server (cuda) failed: foo.cu(3): error: identifier "x" is undefined'
    assert _first_error("building llama-server (cuda) needs cmake: apt-get install cmake") == \
        "building llama-server (cuda) needs cmake: apt-get install cmake"


def test_what_is_tried_in_which_order() -> None:
    """auto falls through from the chosen flavor: CUDA from source, then the prebuilt Vulkan build,
    Vulkan from source, then the CPU; an explicit flavor tries only its own builds; there is no
    prebuilt build for aarch64."""
    from hal0.hardware.flavors import buildable
    from hal0.llamacpp.install import candidates

    h100 = buildable(box("h100"), CUDA)
    assert candidates("cuda", True, h100, "x86_64") == [
        ("source", "cuda"), ("prebuilt", "vulkan"), ("source", "vulkan"), ("prebuilt", "cpu"), ("source", "cpu")]
    assert candidates("vulkan", True, h100, "x86_64") == [
        ("prebuilt", "vulkan"), ("source", "vulkan"), ("source", "cuda"), ("prebuilt", "cpu"), ("source", "cpu")]
    assert candidates("vulkan", False, h100, "x86_64") == [("prebuilt", "vulkan"), ("source", "vulkan")]
    assert candidates("cuda", False, h100, "aarch64") == [("source", "cuda")]
    assert candidates("cpu", True, buildable(box("cpu-vm"), Toolchains()), "aarch64") == [("source", "cpu")]


def test_an_operators_own_binary_is_checked_and_recorded(tmp_path: Path) -> None:
    """--bin: the binary must run here; its flavor is what it lists (none: cpu, said when the probe
    found a GPU); a GPU flavor it does not live up to fails like an installed one."""
    binary = manifest()["llama_server"]["bin"]
    home = _home(tmp_path / "a", box("h100"))
    r = hal0(home, "backend", "install", "llama-server", "--bin", binary, "--no-apt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{binary} lists no GPU: recorded as a cpu build" in r.stdout
    assert tomllib.loads((home / "etc/hal0.toml").read_text())["providers"]["llama-server"] == {
        "bin": binary, "flavor": "cpu"}
    vulkan = hal0(home, "backend", "install", "llama-server", "--bin", binary, "--flavor", "vulkan", "--no-apt")
    assert vulkan.returncode == 1 and "lists no GPU although the probe found the NVIDIA H100" in vulkan.stderr
    gone = hal0(home, "backend", "install", "llama-server", "--bin", str(tmp_path / "nope"))
    assert (gone.returncode, gone.stderr.strip()) == (1, f"hal0: {tmp_path / 'nope'} does not exist")
    assert tomllib.loads((home / "etc/hal0.toml").read_text())["providers"]["llama-server"]["flavor"] == "cpu"


def test_a_box_without_pypi_installs_from_a_pinned_file_it_was_given(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "etc").mkdir(parents=True)
    (home / "etc/hardware.json").write_text(json.dumps(box("cpu-vm")))
    given = Path(manifest()["llama_server"]["downloads"]) / PREBUILT.filename
    # No network: every request through a proxy that is not there (the smoke test's own request to
    # 127.0.0.1 must not go through it: a box behind a proxy once hung here for minutes).
    env = {**hal0_env(home), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    run = [*HAL0, "backend", "install", "llama-server", "--flavor", "cpu", "--no-apt"]
    r = subprocess.run([*run, "--from", str(given)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"using {given}" in r.stdout and "fetching" not in r.stdout
    wrong = tmp_path / "llama.tar.gz"
    wrong.write_bytes(b"not it")
    r = subprocess.run([*run, "--from", str(wrong)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "is not a file hal0 builds llama-server from" in r.stderr
