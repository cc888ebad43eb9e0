"""The one check of a slot's ``[server].extra_args``, for every provider.

hal0 decides where a backend listens (127.0.0.1 and the slot's port: nothing else may reach it
without a token) and what model it serves, so ``extra_args`` may not set those options, in any
spelling: an alias (``-m``), a ``--flag=value`` form, or, for backends that parse their command
line with Python's argparse (the runners, ComfyUI), an abbreviation (``--ho`` is ``--host``
there). And no argument may name a file outside hal0's folders for the slot: the model folders
(``<state>/models`` and ``[models].roots``) and the slot's own state folder. A value with a
``/`` in it is taken for a path; an option known to take a file must be given an absolute one.

``refused_args`` lists what is wrong; ``check_extra_args`` raises ``slot.reserved_arg``.
Slot creation refuses such a slot (400); a slot TOML edited by hand fails to start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hal0.errors import SlotReservedArg

__all__ = ["RULES", "ArgRules", "check_extra_args", "refused_args"]

_NUMBER = re.compile(r"^-\d+(\.\d+)?$")


@dataclass(frozen=True)
class ArgRules:
    reserved: frozenset[str]  # options hal0 sets (address, port, model)
    files: frozenset[str] = frozenset()  # options whose value is a file or folder
    aliases: Mapping[str, str] = field(default_factory=dict)  # other spellings -> the long name
    abbrev: bool = False  # argparse: a prefix of an option is that option

    def canonical(self, flag: str) -> str:
        name = self.aliases.get(flag, flag)
        if self.abbrev and name.startswith("--") and len(name) > 2 and name not in self.reserved | self.files:
            for known in sorted(self.reserved | self.files):
                if known.startswith(name):
                    return known
        return name


_LLAMA = ArgRules(
    reserved=frozenset({"--host", "--port", "--model", "--model-url", "--hf-repo", "--hf-file", "--hf-repo-v",
                        "--hf-file-v", "--docker-repo", "--api-prefix", "--reuse-port",
                        "--rpc"}),  # a slot's `rpc` workers: hal0 checks them before a start
    files=frozenset({"--lora", "--lora-scaled", "--control-vector", "--control-vector-scaled", "--mmproj",
                     "--chat-template-file", "--log-file", "--slot-save-path", "--path", "--model-draft",
                     "--grammar-file", "--json-schema-file", "--ssl-key-file", "--ssl-cert-file", "--api-key-file",
                     "--prompt-cache", "--lookup-cache-static", "--lookup-cache-dynamic", "--model-vocoder",
                     "--file", "--binary-file", "--models-dir", "--media-path", "--mmproj-url"}),
    aliases={"-m": "--model", "-mu": "--model-url", "-hf": "--hf-repo", "-hfr": "--hf-repo", "-hff": "--hf-file",
             "-hfv": "--hf-repo-v", "-hfrv": "--hf-repo-v", "-hffv": "--hf-file-v", "-dr": "--docker-repo",
             "-mm": "--mmproj", "-mmu": "--mmproj-url", "-md": "--model-draft", "-jf": "--json-schema-file",
             "-lcs": "--lookup-cache-static", "-lcd": "--lookup-cache-dynamic", "-mv": "--model-vocoder",
             "-f": "--file", "-bf": "--binary-file"},
)
_RUNNER = ArgRules(reserved=frozenset({"--host", "--port", "--model", "--model-id"}),
                   files=frozenset({"--voices"}), abbrev=True)
_COMFYUI = ArgRules(
    reserved=frozenset({"--listen", "--port", "--base-directory", "--database-url", "--enable-cors-header"}),
    files=frozenset({"--output-directory", "--temp-directory", "--input-directory", "--user-directory",
                     "--extra-model-paths-config", "--front-end-root", "--tls-keyfile", "--tls-certfile"}),
    abbrev=True,
)
_FLM = ArgRules(reserved=frozenset({"--host", "--port"}))
RULES: dict[str, ArgRules] = {"llama-server": _LLAMA, "whisper": _RUNNER, "moonshine": _RUNNER, "kokoro": _RUNNER,
                              "comfyui": _COMFYUI, "flm": _FLM}


def _inside(value: str, folders: Sequence[Path]) -> bool:
    if not value.startswith("/"):
        return False
    real = Path(os.path.realpath(value))  # links and .. resolved: the file the backend would open
    return any(real == f or real.is_relative_to(f) for f in folders)


def refused_args(provider: str, args: Sequence[str], folders: Iterable[Path]) -> list[str]:
    """What is wrong with ``args`` for ``provider`` (empty: nothing)."""
    rules = RULES.get(provider, _FLM)
    roots = [Path(os.path.realpath(f)) for f in folders]
    where = ", ".join(str(f) for f in roots)
    problems: list[str] = []

    def check_value(value: str, option: str | None) -> None:
        parts = value.split(",") if option else [value]
        for part in parts:
            if (option or "/" in part) and part and not _inside(part, roots):
                what = f"{option} {part!r}" if option else repr(part)
                problems.append(f"{what}: a file must be an absolute path inside {where}")

    file_option: str | None = None
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not _NUMBER.match(arg):
            flag, eq, value = arg.partition("=")
            name = rules.canonical(flag)
            if name in rules.reserved:
                problems.append(f"{arg}: hal0 sets {name} itself")
            option = name if name in rules.files else None
            if eq:
                check_value(value, option)
                file_option = None
            else:
                file_option = option
        else:
            check_value(arg, file_option)
            file_option = None
    return problems


def check_extra_args(slot: str, provider: str, args: Sequence[str], folders: Iterable[Path]) -> None:
    """Raise SlotReservedArg (400, ``slot.reserved_arg``) if ``args`` are refused."""
    problems = refused_args(provider, args, folders)
    if problems:
        raise SlotReservedArg(f"[server].extra_args of slot {slot!r} refused: {'; '.join(problems)}",
                              slot=slot, param="server.extra_args", refused=problems)
