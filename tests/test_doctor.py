"""`hal0 doctor`: what it finds on a real home, and the fix it gives for each problem."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from hal0.cli.doctor_cmd import checks
from hal0.paths import resolve_paths
from tests.helpers.env import HAL0, hal0_env, manifest
from tests.helpers.serve import serving, setup_home


def doctor(home: Path, **env: str) -> tuple[int, list[dict[str, str]]]:
    r = subprocess.run([*HAL0, "doctor", "--json"], env=hal0_env(home, **env), capture_output=True, text=True,
                       timeout=120)
    return r.returncode, json.loads(r.stdout)


def test_a_working_box_is_all_ok(tmp_path: Path) -> None:
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    with serving(tmp_path) as s:
        s.load("primary", (tmp_path / "etc/admin.token").read_text().strip())  # loaded, whatever autostart is at
        code, found = doctor(tmp_path, HAL0_URL=s.url)
        assert s.stop() == 0
    by_name = {c["name"]: c for c in found}
    assert code == 0 and {c["level"] for c in found} == {"ok"}, found
    assert by_name["engine llama-server"]["message"].startswith(m["llama_server"]["bin"])
    assert by_name["slot primary"]["message"].startswith(m["models"]["tiny-chat"] + " (on disk")
    assert by_name["server"]["message"] == f"answering at {s.url}"
    assert by_name["last load"]["message"].startswith("primary loaded its model ")


def test_each_problem_has_its_fix(tmp_path: Path) -> None:
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], str(tmp_path / "gone.gguf"))
    embed = tmp_path / "etc/slots/embed.toml"
    embed.write_text(re.sub(r'^default = .*$', 'default = "all-minilm-l6-v2"', embed.read_text(), flags=re.M)
                     .replace("enabled = false", "enabled = true"))
    code, found = doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")
    by_name = {c["name"]: c for c in found}
    assert code == 1
    assert by_name["slot primary"]["level"] == "fail" and "hal0 slot swap primary" in by_name["slot primary"]["fix"]
    embed_check = by_name["slot embed"]
    assert (embed_check["level"], embed_check["fix"]) == ("warn", "hal0 model pull all-minilm-l6-v2")
    assert by_name["server"]["level"] == "warn" and by_name["server"]["fix"] == "hal0 serve"
    (tmp_path / "etc/hal0.toml").write_text("[api]\nport = 'x'\n")
    code, found = doctor(tmp_path)
    assert code == 1 and found[-1]["name"] == "config" and "hal0 config validate" in found[-1]["fix"]


def test_a_gpu_device_the_service_user_cannot_open(tmp_path: Path) -> None:
    """A recorded /dev with a render node only its group may open; `nobody` is not in it."""
    home = tmp_path / "home"
    m = manifest()
    setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    primary = home / "etc/slots/primary.toml"
    primary.write_text(primary.read_text().replace('backend = "cpu"', 'backend = "vulkan"'))
    node = tmp_path / "root/dev/dri/renderD128"
    node.parent.mkdir(parents=True)
    node.touch(mode=0o660)
    node.chmod(0o660)
    found = {c.name: c for c in checks(resolve_paths({"HAL0_HOME": str(home)}), tmp_path / "root", "nobody")}
    device = found["device renderD128"]
    assert device.level == "fail" and device.message.startswith("user nobody cannot open /dev/dri/renderD128")
    assert device.fix.startswith("sudo usermod -aG ") and device.fix.endswith(" nobody")
    node.chmod(0o666)
    found = {c.name: c for c in checks(resolve_paths({"HAL0_HOME": str(home)}), tmp_path / "root", "nobody")}
    assert found["device renderD128"].level == "ok"


def test_a_vulkan_llama_server_that_sees_no_gpu_names_the_libraries(tmp_path: Path) -> None:
    """The recorded H100 box with the real Vulkan build on this GPU-less machine: it starts, but
    lists no GPU, so the engine check fails naming NVIDIA's GL libraries; as cpu it is fine."""
    from hal0.hardware import probe

    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    hw = probe(Path(__file__).parent / "fixtures/hw/h100")
    (tmp_path / "etc/hardware.json").write_text(json.dumps(hw))
    toml = tmp_path / "etc/hal0.toml"
    toml.write_text(toml.read_text().replace(f'bin = "{m["llama_server"]["bin"]}"',
                                             f'bin = "{m["llama_server"]["bin"]}"\nflavor = "vulkan"'))
    _, found = doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")
    engine = {c["name"]: c for c in found}["engine llama-server"]
    assert engine["level"] == "fail", engine
    assert "lists no GPU although the probe found the NVIDIA H100 80GB HBM3" in engine["message"]
    assert engine["fix"].startswith("sudo apt-get install ") and "libvulkan1" in engine["fix"]
    toml.write_text(toml.read_text().replace('flavor = "vulkan"', 'flavor = "cpu"'))
    _, found = doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")
    engine = {c["name"]: c for c in found}["engine llama-server"]
    assert engine["level"] == "ok" and "(cpu, llama.cpp 0.1.0-dev (build 1, commit 7e4c0a9); no GPU device)" in \
        engine["message"]


def test_slots_written_for_another_build_than_the_installed_one_warn(tmp_path: Path) -> None:
    """The recorded H100 box's slots ask for cuda and the installed llama-server is a cpu build that
    lists no GPU: such a slot refuses to start, so it is a failure; on a box whose probe found no
    GPU the same slots run on the CPU, a warning whose fix is the cpu backend."""
    from hal0.hardware import probe

    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    (tmp_path / "etc/hardware.json").write_text(json.dumps(probe(Path(__file__).parent / "fixtures/hw/h100")))
    toml = tmp_path / "etc/hal0.toml"
    toml.write_text(toml.read_text().replace(f'bin = "{m["llama_server"]["bin"]}"',
                                             f'bin = "{m["llama_server"]["bin"]}"\nflavor = "cpu"'))
    primary = tmp_path / "etc/slots/primary.toml"
    primary.write_text(primary.read_text().replace('backend = "cpu"', 'backend = "cuda"'))
    engine = {c["name"]: c for c in doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")[1]}["engine llama-server"]
    assert engine["level"] == "fail", engine
    assert engine["message"].endswith("the llama-server slots ask for cuda, and a build that lists no GPU does not "
                                      "start them")
    assert engine["fix"] == "hal0 backend install llama-server, or set the slots' backend to cpu"
    primary.write_text(primary.read_text().replace("enabled = true", 'enabled = true\nrpc = ["127.0.0.1:50052"]'))
    engine = {c["name"]: c for c in doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")[1]}["engine llama-server"]
    assert engine["level"] == "ok", engine  # split over a worker: its devices, not this build's
    primary.write_text(primary.read_text().replace('rpc = ["127.0.0.1:50052"]\n', ""))
    (tmp_path / "etc/hardware.json").write_text(json.dumps(probe(Path(__file__).parent / "fixtures/hw/cpu-vm")))
    engine = {c["name"]: c for c in doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")[1]}["engine llama-server"]
    assert engine["level"] == "warn", engine
    assert engine["message"].endswith("the llama-server slots ask for cuda and run on the CPU")
    assert engine["fix"] == "set the slots' backend to cpu (the probe found no GPU)"
    primary.write_text(primary.read_text().replace('backend = "cuda"', 'backend = "cpu"'))
    engine = {c["name"]: c for c in doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")[1]}["engine llama-server"]
    assert engine["level"] == "ok", engine


def test_a_llama_server_that_does_not_start(tmp_path: Path) -> None:
    """A binary that is there but cannot load (its libraries are missing): fail, with the reinstall."""
    m = manifest()
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(m["llama_server"]["bin"], broken / "llama-server")  # without the .so files beside it
    setup_home(tmp_path / "home", str(broken / "llama-server"), m["models"]["tiny-chat"])
    _, found = doctor(tmp_path / "home", HAL0_URL="http://127.0.0.1:9")
    engine = {c["name"]: c for c in found}["engine llama-server"]
    assert engine["level"] == "fail" and "--version exits 127" in engine["message"], engine
    assert engine["fix"] == "hal0 backend install llama-server"


def test_vulkan_on_a_headless_nvidia_card_checks_its_nvidia_devices(tmp_path: Path) -> None:
    """The recorded H100 box has no /dev/dri (no render node): its Vulkan slots use /dev/nvidia*."""
    from hal0.hardware import probe

    home = tmp_path / "home"
    m = manifest()
    setup_home(home, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    h100 = Path(__file__).parent / "fixtures/hw/h100"
    (home / "etc/hardware.json").write_text(json.dumps(probe(h100)))
    primary = home / "etc/slots/primary.toml"
    primary.write_text(primary.read_text().replace('backend = "cpu"', 'backend = "vulkan"'))
    found = {c.name: c for c in checks(resolve_paths({"HAL0_HOME": str(home)}), h100, "nobody")}
    assert "devices vulkan" not in found  # before: "no /dev/dri/renderD*", a fail on every such box
    devices = sorted(name for name in found if name.startswith("device "))
    assert devices == ["device nvidia-caps", "device nvidia-uvm", "device nvidia-uvm-tools", "device nvidia0",
                       "device nvidiactl"]
    assert found["device nvidia0"].message == "user nobody cannot open /dev/nvidia0 (group root)"  # files: 0644


def test_a_runner_engine_must_import_in_its_virtualenv(tmp_path: Path) -> None:
    """Present is not enough: the engine's interpreter must import its package and hal0's runner."""
    m = manifest()
    setup_home(tmp_path, m["llama_server"]["bin"], m["models"]["tiny-chat"])
    stt = tmp_path / "etc/slots/stt.toml"
    stt.write_text(stt.read_text().replace('provider = "moonshine"', 'provider = "whisper"'))
    stt.write_text(stt.read_text().replace("enabled = false", "enabled = true"))
    toml = tmp_path / "etc/hal0.toml"
    base = toml.read_text()
    toml.write_text(base + f'\n[providers.whisper]\npython = "{m["whisper"]["python"]}"\n')
    engine = {c["name"]: c for c in doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")[1]}["engine whisper"]
    assert engine["level"] == "ok" and engine["message"].endswith("(imports faster_whisper)"), engine
    toml.write_text(base + f'\n[providers.whisper]\npython = "{m["kokoro"]["python"]}"\n')  # another engine's
    engine = {c["name"]: c for c in doctor(tmp_path, HAL0_URL="http://127.0.0.1:9")[1]}["engine whisper"]
    assert engine["level"] == "fail" and "cannot import faster_whisper: ModuleNotFoundError" in engine["message"]
    assert engine["fix"] == "hal0 backend install whisper"
