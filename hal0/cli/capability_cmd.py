"""``hal0 capability {list,enable,disable}``: a thin client of /api/capabilities."""

from __future__ import annotations

import argparse
from typing import Any

from hal0.cli.output import fail, print_json, table
from hal0.client import ApiClient, ApiError
from hal0.paths import Paths

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    c = sub.add_parser("capability", help="capability cards: embed (+ rerank), voice, img, webui",
                       parents=[common], description="capability cards: embed (+ rerank), voice, img, webui")
    cs = c.add_subparsers(dest="capability_command", required=True, metavar="ACTION")
    cs.add_parser("list", help="the cards and their children", parents=[common])
    for action in ("enable", "disable"):
        p = cs.add_parser(action, help=f"{action} a card's child, e.g. `{action} embed rerank`", parents=[common])
        p.add_argument("card")
        p.add_argument("child")


def run(args: argparse.Namespace, paths: Paths) -> int:
    api = ApiClient(paths)
    try:
        if args.capability_command == "list":
            cards = api.call("GET", "/api/capabilities")["cards"]
            if args.json:
                print_json(cards)
            else:
                table([(card, child, c["slot"] or c.get("service"), c["state"] if c["exists"] else "-",
                        "yes" if c["enabled"] else "no", c["model"]) for card, kids in cards.items()
                       for child, c in kids.items()], ["CARD", "CHILD", "SLOT", "STATE", "ENABLED", "MODEL"])
            return 0
        body = {"enabled": args.capability_command == "enable"}
        out = api.call("POST", f"/api/capabilities/{args.card}/{args.child}", body, timeout=None)
        what = f"slot {out['slot']}" if out["slot"] else f"{out.get('service')} on {out.get('url')}"
        print_json(out) if args.json else print(
            f"{args.card}/{args.child}: {what} {'enabled' if out['enabled'] else 'disabled'}, {out['state']}")
        return 0
    except ApiError as e:
        return fail(e)
