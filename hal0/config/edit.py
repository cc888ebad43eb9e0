"""The one place hal0 changes an operator's hal0.toml: a ``[providers.NAME]`` table's keys, set
by `hal0 backend install`. The edit is textual, so comments and the rest of the file stay as
they were; the result is validated before it replaces the file (atomically)."""

from __future__ import annotations

import re
import tomllib

import tomli_w

from hal0.atomic import atomic_write
from hal0.config.load import load_config, parse_section
from hal0.config.schema import Hal0Config
from hal0.errors import ConfigInvalid
from hal0.paths import Paths

__all__ = ["set_provider"]


def set_provider(paths: Paths, provider: str, values: dict[str, str]) -> None:
    """Set ``[providers.<provider>]`` keys in hal0.toml (creating the table, or the file).

    Raises ConfigInvalid when the file is invalid already, or when the provider's keys are written
    in a way this edit cannot change (dotted keys or an inline table): the message says what to set.
    """
    file = paths.hal0_toml
    load_config(paths)  # an invalid file is the operator's to fix first
    text = file.read_text() if file.exists() else ""
    lines = text.splitlines()
    header = re.compile(rf'^\s*\[\s*providers\s*\.\s*("?){re.escape(provider)}\1\s*\]\s*(#.*)?$')
    start = next((i for i, ln in enumerate(lines) if header.match(ln)), None)
    rendered = {k: tomli_w.dumps({k: v}).strip() for k, v in values.items()}
    if start is None:
        lines += ["", f"[providers.{provider}]", *rendered.values()]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        body = lines[start + 1:end]
        for key, line in rendered.items():
            at = next((i for i, ln in enumerate(body) if re.match(rf"^\s*{re.escape(key)}\s*=", ln)), None)
            if at is None:
                last = max((i for i, ln in enumerate(body) if ln.strip()), default=-1)
                body.insert(last + 1, line)
            else:
                body[at] = line
        lines[start + 1:end] = body
    new = "\n".join(lines).lstrip("\n") + "\n"
    try:
        got = tomllib.loads(new).get("providers", {}).get(provider, {})
    except tomllib.TOMLDecodeError:
        got = {}
    if any(got.get(k) != v for k, v in values.items()):
        wanted = ", ".join(rendered.values())
        raise ConfigInvalid(str(file), f"providers.{provider}", f"could not be updated in place: set {wanted} "
                            f"in its [providers.{provider}] table by hand")
    parse_section(Hal0Config, tomllib.loads(new), str(file))  # the values themselves are valid
    atomic_write(file, new)
