"""The FLM (NPU) provider with a stand-in `flm` binary, NPU exclusivity and the npu card."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hal0.hardware import probe
from tests.helpers.env import HAL0, hal0_env
from tests.helpers.hwtrees import strix_halo
from tests.helpers.serve import serving
from tests.helpers.slots import fake_bin
from tests.test_capabilities import call
from tests.test_hardware import FIXTURES


def home_with(tmp_path: Path, hardware: dict[str, object]) -> str:
    (tmp_path / "etc").mkdir(parents=True)
    flm = fake_bin(tmp_path).bin  # answers `flm serve TAG --port P` like FLM's server
    (tmp_path / "etc/hardware.json").write_text(json.dumps(hardware))
    subprocess.run([*HAL0, "init", "--provider-bin", f"flm={flm}"], env=hal0_env(tmp_path), check=True,
                   capture_output=True)
    for name in ("primary", "embed", "stt", "tts", "img"):
        toml = tmp_path / f"etc/slots/{name}.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    return (tmp_path / "etc/admin.token").read_text().strip()


def test_flm_slot_loads_and_a_second_npu_slot_is_refused(tmp_path: Path) -> None:
    strix_halo(tmp_path / "tree")
    token = home_with(tmp_path / "home", probe(tmp_path / "tree"))
    with serving(tmp_path / "home") as s:
        status, slot = call(s, token, "POST", "/api/slots", {"name": "npu", "provider": "flm", "backend": "npu",
                                                              "model": "llama3.2:1b"})
        assert status == 201, slot
        status, slot = call(s, token, "POST", "/api/slots/npu/load", {})
        assert (status, slot["state"], slot["model"]) == (200, "ready", "llama3.2:1b")
        assert any("serve llama3.2:1b --port" in line for line in call(s, token, "GET", "/api/slots/npu")[1]
                   ["log_tail"])
        status, err = call(s, token, "POST", "/api/slots", {"name": "npu2", "provider": "flm", "backend": "npu",
                                                             "model": "qwen3:0.6b"})
        assert (status, err["error"]["code"]) == (409, "slot.npu_exclusive")
        cards = call(s, token, "GET", "/api/capabilities")[1]["cards"]
        assert list(cards["npu"]) == ["npu"] and cards["npu"]["npu"]["state"] == "ready"
        status, err = call(s, token, "POST", "/api/slots/npu/swap", {"model": "../x"})
        assert (status, err["error"]["code"]) == (400, "model.invalid")  # FLM tags, never paths
        assert call(s, token, "GET", "/api/slots/npu")[1]["state"] == "ready"
        assert s.stop() == 0


def test_no_npu_card_without_an_xdna_device(tmp_path: Path) -> None:
    token = home_with(tmp_path, probe(FIXTURES / "cpu-vm"))
    with serving(tmp_path) as s:
        assert "npu" not in call(s, token, "GET", "/api/capabilities")[1]["cards"]
        assert s.stop() == 0
