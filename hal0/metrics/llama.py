"""llama-server's own metrics (``--metrics``), fetched from each ready slot at scrape time and
re-exported under their own names with a ``slot`` label.

The text is relabelled line by line rather than parsed into metric objects, so every name
stays exactly as llama-server wrote it (prometheus_client's parser renames a counter without
``_total``). Families of the same name from several slots are merged, so each HELP and TYPE
line appears once. A slot that does not answer within the timeout is left out of this scrape.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import aiohttp

__all__ = ["PREFIX", "fetch", "relabel"]

PREFIX = "llamacpp:"  # what llama-server exports; anything else in its answer is dropped
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^\n]*\})?( [^\n]+)$")
_COMMENT = re.compile(r"# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?([^\n]*)$")


async def _one(session: aiohttp.ClientSession, port: int, timeout: float) -> str | None:
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics",
                               timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            if r.status != 200:
                return None
            return (await r.read()).decode("utf-8", "replace")
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def fetch(session: aiohttp.ClientSession, slots: Iterable[tuple[str, int]],
                timeout: float) -> dict[str, str | None]:
    """Each ``(slot, port)``'s /metrics text, concurrently; None where it did not answer in time."""
    targets = list(slots)
    texts = await asyncio.gather(*(_one(session, port, timeout) for _, port in targets))
    return {name: text for (name, _), text in zip(targets, texts, strict=True)}


def relabel(texts: dict[str, str]) -> bytes:
    """One exposition of every slot's families, each sample with ``slot="<name>"`` first."""
    heads: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for slot, text in texts.items():
        family = ""
        for line in text.splitlines():
            if line.startswith("#"):
                m = _COMMENT.match(line)
                if m is None:
                    continue
                family = m.group(2)
                if family.startswith(PREFIX):
                    heads.setdefault(family, [])
                    if not any(h.startswith(f"# {m.group(1)} ") for h in heads[family]):
                        heads[family].append(line)
                continue
            m = _SAMPLE.match(line)
            if m is None or not m.group(1).startswith(PREFIX):
                continue
            labels = m.group(2)
            if labels and 'slot="' in labels:
                continue  # hal0's label would collide with the backend's own
            inner = labels[1:-1].strip().strip(",") if labels else ""
            label_text = f'{{slot="{slot}"' + (f",{inner}}}" if inner else "}")
            samples.setdefault(family if m.group(1).startswith(family) and family else m.group(1), []).append(
                m.group(1) + label_text + m.group(3))
    out = []
    for family, lines in samples.items():
        out.extend(heads.get(family, []))
        out.extend(lines)
    return ("\n".join(out) + "\n").encode() if out else b""
