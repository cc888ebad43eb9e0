"""``hal0 token {create,list,revoke}``: edits tokens.toml directly (a running server
notices the change on its next request)."""

from __future__ import annotations

import argparse
import sys

from hal0.auth import create_token, list_tokens, revoke_token
from hal0.cli.output import print_json, table
from hal0.paths import Paths


def run(args: argparse.Namespace, paths: Paths) -> int:
    file = paths.tokens_toml
    if args.token_command == "create":
        rec, token = create_token(file, args.name, args.scope)
        if args.json:
            print_json({"id": rec.id, "name": rec.name, "scope": rec.scope, "token": token})
        else:
            print(f"created {rec.scope} token {rec.id} ({rec.name}); it is shown only once:\n{token}")
        return 0
    if args.token_command == "list":
        records = list_tokens(file)
        if args.json:
            print_json([{"id": r.id, "name": r.name, "scope": r.scope, "created_at": r.created_at}
                        for r in records])
        else:
            table([(r.id, r.name, r.scope, r.created_at) for r in records],
                  ["ID", "NAME", "SCOPE", "CREATED"])
        return 0
    if not revoke_token(file, args.id):
        print(f"hal0: no token with id {args.id!r} (see `hal0 token list`)", file=sys.stderr)
        return 1
    print(f"revoked {args.id}")
    return 0
