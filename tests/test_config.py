from __future__ import annotations

from pathlib import Path

import pytest

from hal0.bootstrap import init_tree
from hal0.config import BUILTIN_SLOTS, load_config, load_slots
from hal0.errors import ConfigInvalid
from hal0.hardware import probe
from hal0.hardware.seeding import seed_slots
from hal0.paths import Paths


def test_defaults_without_any_file(paths: Paths) -> None:
    cfg = load_config(paths)
    assert (cfg.api.port, cfg.api.auth, cfg.slots.port_range) == (8080, "on", (8081, 8099))
    slots = load_slots(paths)
    assert list(slots) == list(BUILTIN_SLOTS)
    assert [s.port for s in slots.values()] == [8081, 8082, 8083, 8084, 8085]
    assert slots["stt"].provider == "moonshine" and slots["img"].provider == "comfyui"


def test_init_files_round_trip_to_the_same_config(paths: Paths) -> None:
    """What init writes loads back as exactly what the seeds said."""
    hw = probe(Path(__file__).parent / "fixtures/hw/h100")
    before = load_config(paths)
    init_tree(paths, hardware=hw)
    assert load_config(paths) == before
    assert {n: s.slot for n, s in seed_slots(hw).items()} == load_slots(paths)


@pytest.mark.parametrize(("text", "key", "problem"), [
    ("[api]\nport = 'x'\n", "api.port", "expected an integer"),
    ("[api]\nprot = 1\n", "api.prot", "unknown key"),
    ("[api]\nauth = 'maybe'\n", "api.auth", "expected 'on' or 'off'"),
    ("[slots]\nport_range = [8099, 8081]\n", "slots.port_range", "above"),
    ("[slots]\nport_range = [1]\n", "slots.port_range", "list of 2"),
    ("[upstreams.box]\nurl = 'ftp://x'\n", "upstreams.box.url", "http(s)"),
    ("[upstreams.box]\nmodels = ['a', 3]\n", "upstreams.box.models[1]", "expected a string"),
    ("[upstreams.box]\nmodels = []\n", "upstreams.box.url", "required"),
    ("[peers.b]\nurl = 'b:8080'\n", "peers.b.url", "http(s)"),
    ("[peers.b]\ntoken = 'secret'\nurl = 'http://b'\n", "peers.b.token", "unknown key"),
    ("[peers.b]\nurl = 'http://b'\n[upstreams.b]\nurl = 'http://c'\n", "peers.b", "names are shared"),
    ("api = [\n", "", "not valid TOML"),
])
def test_invalid_hal0_toml_names_file_and_key(paths: Paths, text: str, key: str, problem: str) -> None:
    paths.config_dir.mkdir(parents=True)
    paths.hal0_toml.write_text(text)
    with pytest.raises(ConfigInvalid) as e:
        load_config(paths)
    assert e.value.details == {"file": str(paths.hal0_toml), "key": key}
    assert problem in e.value.message
    assert paths.hal0_toml.read_text() == text


@pytest.mark.parametrize(("text", "key"), [
    ("name = 'other'\nport = 8090\n", "name"),
    ("port = 8090\n[model]\ncontext_size = 1.5\n", "model.context_size"),
    ("port = 8090\nenabled = 'yes'\n", "enabled"),
    ("port = 8090\n[server]\nextra_args = '--foo'\n", "server.extra_args"),
    ("port = 70000\n", "port"),
    ("port = 8090\nprovider = 'vllm'\n", "provider"),
    ("port = 8081\n", "port"),
    ("port = 8090\nrpc = ['10.0.0.2']\n", "rpc[0]"),
    ("port = 8090\nrpc = ['10.0.0.2:99999']\n", "rpc[0]"),
    ("port = 8090\nrpc = ['fe80::1:50052']\n", "rpc[0]"),
    ("port = 8090\nrpc = '10.0.0.2:50052'\n", "rpc"),
    ("port = 8090\nrpc = ['b:1', 'b:1']\n", "rpc"),
    ("port = 8090\nprovider = 'whisper'\nrpc = ['b:50052']\n", "rpc"),
])
def test_invalid_slot_toml_names_file_and_key(paths: Paths, text: str, key: str) -> None:
    paths.slots_dir.mkdir(parents=True)
    file = paths.slot_toml("mine")
    file.write_text(text)
    with pytest.raises(ConfigInvalid) as e:
        load_slots(paths)
    assert e.value.details["key"] == key


def test_custom_slot_loads_after_builtins(paths: Paths) -> None:
    paths.slots_dir.mkdir(parents=True)
    paths.slot_toml("fast").write_text(
        "port = 8087\n[server]\nextra_args = ['--lora', 'a.gguf']\n[env]\nFOO = 'bar'\n")
    slots = load_slots(paths)
    assert list(slots)[-1] == "fast"
    assert slots["fast"].server.extra_args == ("--lora", "a.gguf")
    assert slots["fast"].env == {"FOO": "bar"}
