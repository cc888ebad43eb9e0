"""The CLI as a user runs it: real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.env import HAL0, REPO, hal0_env, manifest


def run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HAL0, *args], env=hal0_env(home), capture_output=True, text=True, timeout=60)


def test_version(tmp_path: Path) -> None:
    r = run(tmp_path, "version", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, {"version": "0.1.0"})


def test_unknown_arguments_print_usage_and_exit_2(tmp_path: Path) -> None:
    r = run(tmp_path, "serve", "--bogus")
    assert r.returncode == 2
    assert "usage:" in r.stderr and "--bogus" in r.stderr
    assert run(tmp_path, "frobnicate").returncode == 2


def test_init_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    r = run(tmp_path, "init", "--json", "--slot-model", "primary=gemma3-270m")
    created = json.loads(r.stdout)["created"]
    assert r.returncode == 0 and len(created) == 8  # hal0.toml, 5 slots, hardware.json, admin.token
    primary = tmp_path / "etc/slots/primary.toml"
    assert 'default = "gemma3-270m"' in primary.read_text()
    primary.write_text(primary.read_text() + "# my edit\n")
    token = (tmp_path / "etc/admin.token").read_text()
    r = run(tmp_path, "init", "--json")
    assert json.loads(r.stdout)["created"] == []
    assert primary.read_text().endswith("# my edit\n")
    assert (tmp_path / "etc/admin.token").read_text() == token


def test_init_rejects_a_bad_slot_model(tmp_path: Path) -> None:
    r = run(tmp_path, "init", "--slot-model", "nope=x")
    assert r.returncode == 2 and "not built-in slots: nope" in r.stderr


def test_config_validate_reports_file_and_key(tmp_path: Path) -> None:
    run(tmp_path, "init")
    (tmp_path / "etc/slots/embed.toml").write_text("name = 'embed'\nport = 'eighty'\n")
    r = run(tmp_path, "config", "validate")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"hal0: config.invalid: {tmp_path}/etc/slots/embed.toml: port: "
                                "expected an integer, got 'eighty'")


def test_config_show_prints_the_effective_config(tmp_path: Path) -> None:
    r = run(tmp_path, "config", "show", "--json")
    data = json.loads(r.stdout)
    assert data["hal0"]["api"]["port"] == 8080 and list(data["slots"]) == [
        "primary", "embed", "stt", "tts", "img"]


def test_token_create_list_revoke(tmp_path: Path) -> None:
    made = json.loads(run(tmp_path, "token", "create", "ha", "--json").stdout)
    assert made["scope"] == "inference" and made["token"].startswith(f"hal0_{made['id']}_")
    listed = json.loads(run(tmp_path, "token", "list", "--json").stdout)
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert run(tmp_path, "token", "revoke", made["id"]).returncode == 0
    assert json.loads(run(tmp_path, "token", "list", "--json").stdout) == []
    assert run(tmp_path, "token", "revoke", made["id"]).returncode == 1


def test_status_without_a_server_says_so(tmp_path: Path) -> None:
    r = run(tmp_path, "status")
    assert r.returncode == 1 and "is `hal0 serve` running?" in r.stderr


def test_client_commands_do_not_import_the_server_stack() -> None:
    code = ("import sys; from hal0.cli import main; main(['version']);"
            "import hal0.client, hal0.cli.status_cmd, hal0.cli.token_cmd, hal0.cli.config_cmd;"
            "print(sorted(m for m in sys.modules if m.startswith('aiohttp') or m.startswith('hal0.server')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert r.stdout.strip().endswith("[]")


def test_init_says_which_seeded_models_are_still_to_pull(tmp_path: Path) -> None:
    from hal0.models.catalog import load_catalog

    m = manifest()
    r = run(tmp_path, "init", "--json", "--slot-model", "primary=qwen3-4b-q4_k_m",
            "--slot-model", f"embed={m['models']['tiny-embed']}")
    missing = {x["slot"]: x for x in json.loads(r.stdout)["missing_models"]}
    catalog = load_catalog()
    assert missing["primary"] == {"slot": "primary", "model": "qwen3-4b-q4_k_m",
                                  "size": catalog["qwen3-4b-q4_k_m"].size}
    assert "embed" not in missing  # a file on disk needs no pull
    assert all(x["model"] in catalog for x in missing.values())
    r = run(tmp_path, "init")  # and in words
    assert "models to pull" in r.stdout and "  primary  qwen3-4b-q4_k_m (2.50 GB)" in r.stdout.splitlines()


def test_the_catalogue_marks_what_fits_this_box(tmp_path: Path) -> None:
    run(tmp_path, "init")
    (tmp_path / "etc/hardware.json").write_text(json.dumps({"memory": {"total_bytes": 2**30}, "gpus": []}))
    env = hal0_env(tmp_path, HAL0_URL="http://127.0.0.1:9")  # no server: nothing is marked on disk

    def catalog(*args: str) -> list[dict[str, object]]:
        r = subprocess.run([*HAL0, "model", "catalog", "--json", *args], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]
    every = {e["id"]: e for e in catalog()}
    assert every["qwen3-30b-a3b-instruct-2507-q4_k_m"]["fits"] is False
    assert every["all-minilm-l6-v2"]["fits"] is True and not any(e["on_disk"] for e in every.values())
    small = catalog("--fits", "--kind", "embed")
    assert small and all(e["fits"] and e["kind"] == "embed" for e in small)
    assert {e["id"] for e in small} == {i for i, e in every.items() if e["fits"] and e["kind"] == "embed"}


def test_json_and_system_work_before_and_after_the_command() -> None:
    from hal0.cli import build_parser

    parser = build_parser()
    for argv in (["--json", "probe"], ["probe", "--json"], ["--json", "slot", "list"], ["slot", "list", "--json"]):
        assert parser.parse_args(argv).json, argv  # `hal0 --json probe` once printed text
    for argv in (["--system", "slot", "list"], ["slot", "list", "--system"]):
        assert parser.parse_args(argv).system, argv
    plain = parser.parse_args(["slot", "list"])
    assert plain.json is False and plain.system is False
