"""The ``hal0`` command line. Commands import their machinery lazily, so that
client commands never load the server stack (aiohttp's server side)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hal0 import __version__

__all__ = ["main"]


def _paths(args: argparse.Namespace) -> Any:
    from hal0.paths import resolve_paths

    return resolve_paths(system=args.system)


def cmd_version(args: argparse.Namespace) -> int:
    print(json.dumps({"version": __version__}) if args.json else f"hal0 {__version__}")
    return 0


def cmd_unit(args: argparse.Namespace) -> int:
    """The systemd unit hal0 runs as (what install.sh writes to /etc/systemd/system)."""
    from importlib import resources

    name = "hal0-worker.service" if args.worker else "hal0.service"
    print(resources.files("hal0.systemd").joinpath(name).read_text(), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hal0.server.run import serve

    return serve(_paths(args), args.host, args.port)


def cmd_init(args: argparse.Namespace) -> int:
    from hal0.bootstrap import describe_missing, init_tree, missing_models

    paths = _paths(args)
    flags = {"--slot-model": args.slot_model, "--slot-provider": args.slot_provider,
             "--provider-bin": args.provider_bin, "--provider-python": args.provider_python}
    pairs: dict[str, dict[str, str]] = {flag: {} for flag in flags}
    for flag, items in flags.items():
        for item in items or []:
            name, sep, value = item.partition("=")
            if not sep or not value:
                print(f"hal0 init: {flag} wants NAME=VALUE, got {item!r}", file=sys.stderr)
                return 2
            pairs[flag][name] = value
    providers: dict[str, dict[str, str]] = {}
    for flag, key in (("--provider-bin", "bin"), ("--provider-python", "python")):
        for name, value in pairs[flag].items():
            providers.setdefault(name, {})[key] = value
    try:
        created = init_tree(paths, pairs["--slot-model"], providers, pairs["--slot-provider"])
    except ValueError as e:
        print(f"hal0 init: {e}", file=sys.stderr)
        return 2
    missing = missing_models(paths)
    if args.json:
        print(json.dumps({"config_dir": str(paths.config_dir), "state_dir": str(paths.state_dir),
                          "created": [str(p) for p in created],
                          "missing_models": [{"slot": s, "model": m, "size": n} for s, m, n in missing]}))
    else:
        print(f"config: {paths.config_dir}\nstate:  {paths.state_dir}")
        for p in created:
            print(f"  created {p}")
        for line in _seed_notes(paths, created):
            print(f"  {line}")
        if not created:
            print("  nothing to do: everything already exists")
        if paths.admin_token in created:
            print(f"admin token written to {paths.admin_token} (mode 0600)")
        for line in describe_missing(missing):
            print(line)
    if args.pull and missing:
        from hal0.cli.model_cmd import pull_here  # the server may not run yet: pull in this process

        return pull_here(paths, sorted({m for _, m, _ in missing}), args.json)
    return 0


def _seed_notes(paths: Any, created: list[Any]) -> list[str]:
    """Why a slot just seeded has another backend than its tier's (a build the box cannot have)."""
    from hal0.hardware.seeding import seed_slots

    if not any(p.parent == paths.slots_dir for p in created) or not paths.hardware_json.is_file():
        return []
    seeds = seed_slots(json.loads(paths.hardware_json.read_text()))
    return [f"{name}: {seed.note}" for name, seed in seeds.items() if seed.note and paths.slot_toml(name) in created]


def _client(module: str) -> Callable[[argparse.Namespace], int]:
    """A command whose module (hal0.cli.<module>, with ``run(args, paths)``) is imported only when run."""
    def command(args: argparse.Namespace) -> int:
        return int(importlib.import_module(f"hal0.cli.{module}").run(args, _paths(args)))
    return command


def _runner_cmd(args: argparse.Namespace) -> int:
    from hal0.runners.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    # Accepted before and after the command (`hal0 --json probe`, `hal0 probe --json`): a command's
    # own copy must not reset what was given before it, hence SUPPRESS there and the defaults on top.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument("--system", action="store_true", default=argparse.SUPPRESS,
                        help="use /etc/hal0 and /var/lib/hal0")
    p = argparse.ArgumentParser(prog="hal0", description="A private, OpenAI-compatible inference appliance.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--system", action="store_true", help="use /etc/hal0 and /var/lib/hal0")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, parents=[common], description=help)
        sp.set_defaults(func=fn)
        return sp

    add("version", cmd_version, "print the version")
    u = add("unit", cmd_unit, "print hal0's systemd unit (packaging/systemd/hal0.service)")
    u.add_argument("--worker", action="store_true", help="the unit of `hal0 worker` (hal0-worker.service)")
    s = add("serve", cmd_serve, "run the API server and its slots in the foreground")
    s.add_argument("--host", help="address to listen on (default: [api].host)")
    s.add_argument("--port", type=int, help="port to listen on (default: [api].port)")
    i = add("init", cmd_init, "create the config tree, built-in slots and an admin token")
    i.add_argument("--pull", action="store_true",
                   help="then pull the seeded models that are not on disk yet, with progress")
    i.add_argument("--slot-model", action="append", metavar="SLOT=MODEL",
                   help="seed [model].default of a new built-in slot TOML (repeatable)")
    i.add_argument("--slot-provider", action="append", metavar="SLOT=PROVIDER",
                   help="seed the provider of a new built-in slot TOML, e.g. stt=whisper (repeatable)")
    i.add_argument("--provider-bin", action="append", metavar="PROVIDER=PATH",
                   help="seed [providers.PROVIDER].bin of a new hal0.toml, e.g. llama-server=/opt/llama-server")
    i.add_argument("--provider-python", action="append", metavar="PROVIDER=PATH",
                   help="seed [providers.PROVIDER].python (the engine virtualenv's interpreter), e.g. "
                        "whisper=/opt/whisper/bin/python")
    add("status", _client("status_cmd"), "show the running server's status")
    pr = add("probe", _client("probe_cmd"), "show this box's hardware and what changed since hardware.json")
    pr.add_argument("--apply", action="store_true", help="write the snapshot to hardware.json")
    d = add("doctor", _client("doctor_cmd"), "check this box for hal0: config, engines, models, devices, "
            "disk, server; each problem with its fix (exit 1 if any check fails)")
    d.add_argument("--root", default="/", help="read devices under this folder (a recorded tree)")

    c = add("config", _client("config_cmd"), "show or validate the configuration")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    csub.add_parser("show", help="print the effective configuration", parents=[common])
    csub.add_parser("validate", help="check every config file", parents=[common])

    from hal0.cli import model_cmd, slot_cmd

    slot_cmd.add_parser(sub, common)
    sub.choices["slot"].set_defaults(func=_client("slot_cmd"))
    model_cmd.add_parser(sub, common)
    sub.choices["model"].set_defaults(func=_client("model_cmd"))

    from hal0.cli import backend_cmd, capability_cmd, gpu_cmd
    from hal0.runners import cli as runner_cli

    capability_cmd.add_parser(sub, common)
    sub.choices["capability"].set_defaults(func=_client("capability_cmd"))
    backend_cmd.add_parser(sub, common)
    sub.choices["backend"].set_defaults(func=_client("backend_cmd"))
    gpu_cmd.add_parser(sub, common)
    sub.choices["gpu"].set_defaults(func=_client("gpu_cmd"))

    from hal0.cli import worker_cmd

    worker_cmd.add_parser(sub, common)
    sub.choices["worker"].set_defaults(func=_client("worker_cmd"))

    runner_cli.add_parser(sub, common)
    sub.choices["runner"].set_defaults(func=_runner_cmd)

    from hal0.auth import SCOPES

    t = add("token", _client("token_cmd"), "manage API tokens")
    tsub = t.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    tc = tsub.add_parser("create", help="mint a token (shown once)", parents=[common])
    tc.add_argument("name")
    tc.add_argument("--scope", choices=SCOPES, default="inference",
                    help="admin: everything; inference: /v1; metrics: GET /metrics only")
    tsub.add_parser("list", help="list tokens (never their secrets)", parents=[common])
    tr = tsub.add_parser("revoke", help="revoke a token by id", parents=[common])
    tr.add_argument("id")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from hal0.errors import Hal0Error, no_space

        if isinstance(e, OSError) and (full := no_space(e)) is not None:
            e = full
        if isinstance(e, Hal0Error):
            print(f"hal0: {e.code}: {e.message}", file=sys.stderr)
            return 2 if e.code == "config.invalid" else 1
        raise
