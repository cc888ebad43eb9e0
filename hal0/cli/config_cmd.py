"""``hal0 config {show,validate}``: local, no server needed."""

from __future__ import annotations

import argparse
import sys

import tomli_w

from hal0.cli.output import print_json
from hal0.config import load_config, load_slots, to_dict
from hal0.errors import ConfigInvalid
from hal0.paths import Paths


def run(args: argparse.Namespace, paths: Paths) -> int:
    try:
        config, slots = load_config(paths), load_slots(paths)
    except ConfigInvalid as e:
        if args.json:
            print_json({"valid": False, "code": e.code, "message": e.message, **e.details})
        else:
            print(f"hal0: {e.code}: {e.message}", file=sys.stderr)
        return 2
    if args.config_command == "validate":
        if args.json:
            print_json({"valid": True, "config_dir": str(paths.config_dir), "slots": list(slots)})
        else:
            print(f"ok: {paths.hal0_toml} and {len(slots)} slots are valid")
        return 0
    data = {"hal0": to_dict(config), "slots": {n: to_dict(s) for n, s in slots.items()}}
    if args.json:
        print_json(data)
    else:
        print(f"# {paths.mode} mode: config {paths.config_dir}, state {paths.state_dir}")
        print(tomli_w.dumps(data))
    return 0
