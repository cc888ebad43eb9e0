"""Merging command-line argument lists end to end (provider defaults, then the slot's).

Arguments are grouped into options (a flag and the value that follows it, if
any). A flag the slot gives replaces the provider's, except repeatable flags,
which accumulate. Aliases (short and long spellings) count as one flag.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["merge_args", "split_options"]

_NUMBER = re.compile(r"^-\d+(\.\d+)?$")


def split_options(args: Sequence[str]) -> list[list[str]]:
    """Group ``args`` into ``[flag, value?]`` lists; bare words stand alone."""
    groups: list[list[str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and not _NUMBER.match(arg):
            if "=" in arg and arg.startswith("--"):
                flag, _, value = arg.partition("=")
                groups.append([flag, value])
            elif i + 1 < len(args) and (not args[i + 1].startswith("-") or _NUMBER.match(args[i + 1])):
                groups.append([arg, args[i + 1]])
                i += 1
            else:
                groups.append([arg])
        else:
            groups.append([arg])
        i += 1
    return groups


def merge_args(base: Sequence[str], extra: Sequence[str], *, aliases: Mapping[str, str],
               repeatable: frozenset[str]) -> list[str]:
    """``base`` with ``extra`` merged over it: extra's flags win, repeatable ones add up."""
    def key(flag: str) -> str:
        return aliases.get(flag, flag)

    extra_groups = split_options(extra)
    overridden = {key(g[0]) for g in extra_groups if g[0].startswith("-") and key(g[0]) not in repeatable}
    kept = [g for g in split_options(base) if not (g[0].startswith("-") and key(g[0]) in overridden)]
    return [a for g in (*kept, *extra_groups) for a in g]
