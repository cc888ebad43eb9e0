"""``hal0 init``: create the config and state tree, idempotently, never overwriting."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from hal0.atomic import atomic_write
from hal0.auth import create_token
from hal0.config import BUILTIN_SLOTS, PROVIDER_NAMES, Hal0Config, render_slot_toml, to_dict
from hal0.config.overrides import read_override
from hal0.hardware import probe
from hal0.hardware.flavors import Toolchains
from hal0.hardware.seeding import seed_slots
from hal0.models.catalog import catalog_entry
from hal0.models.registry import Registry
from hal0.paths import Paths

__all__ = ["describe_missing", "init_tree", "missing_models", "write_seeds"]


def _default_hal0_toml(providers: dict[str, dict[str, str]]) -> str:
    data = to_dict(Hal0Config())
    data.pop("upstreams")
    data.pop("peers")
    data["providers"] = providers
    return ("# hal0 configuration. Every key is optional; these are the defaults.\n"
            "# Remote OpenAI-compatible servers go in [upstreams.NAME] tables, other hal0s in [peers.NAME]\n"
            "# (docs/multi-box.md).\n" + tomli_w.dumps(data))


def _create(path: Path, text: str, created: list[Path], mode: int = 0o644) -> None:
    if not path.exists():
        atomic_write(path, text, mode=mode)
        created.append(path)


def write_seeds(paths: Paths, hardware: dict[str, Any], slot_models: dict[str, str] | None = None,
                slot_providers: dict[str, str] | None = None, *, dry_run: bool = False,
                toolchains: Toolchains | None = None) -> list[Path]:
    """Write the seeded TOML of each built-in slot that has none; returns the files (to be) written.
    ``toolchains`` (default: what is installed here) says which llama-server builds the box can have."""
    slot_models, slot_providers = slot_models or {}, slot_providers or {}
    written: list[Path] = []
    for name, seed in seed_slots(hardware, toolchains).items():
        slot = seed.slot
        note = "\n# ".join(n for n in (seed.reason and f"disabled at install: {seed.reason}", seed.note) if n)
        if name in slot_models:
            slot = replace(slot, model=replace(slot.model, default=slot_models[name]))
        if name in slot_providers:
            slot = replace(slot, provider=slot_providers[name], backend="cpu", enabled=True)  # type: ignore[arg-type]
            note = ""
        if dry_run:
            if not paths.slot_toml(name).exists():
                written.append(paths.slot_toml(name))
        else:
            _create(paths.slot_toml(name), render_slot_toml(slot, note), written)
    return written


def init_tree(paths: Paths, slot_models: dict[str, str] | None = None,
              providers: dict[str, dict[str, str]] | None = None,
              slot_providers: dict[str, str] | None = None,
              hardware: dict[str, Any] | None = None, toolchains: Toolchains | None = None) -> list[Path]:
    """Create what is missing and return the files created.

    Built-in slot TOMLs that do not exist yet are seeded from the hardware snapshot
    (``hardware``, default: hardware.json, probed now if missing) through the tier table;
    ``slot_models`` and ``slot_providers`` override the seeds; ``providers`` seeds
    ``[providers.NAME]`` tables (``bin``, ``python``) of a new hal0.toml.
    """
    slot_models, providers, slot_providers = slot_models or {}, providers or {}, slot_providers or {}
    unknown = (set(slot_models) | set(slot_providers)) - set(BUILTIN_SLOTS)
    if unknown:
        raise ValueError(f"not built-in slots: {', '.join(sorted(unknown))}")
    unknown = (set(providers) | set(slot_providers.values())) - set(PROVIDER_NAMES)
    if unknown:
        raise ValueError(f"unknown providers: {', '.join(sorted(unknown))}")
    created: list[Path] = []
    for d in (paths.config_dir, paths.slots_dir, paths.state_dir, paths.models_dir,
              paths.backends_dir, paths.images_dir):
        d.mkdir(parents=True, exist_ok=True)
    _create(paths.hal0_toml, _default_hal0_toml(providers), created)
    if hardware is None:
        if not paths.hardware_json.exists():
            _create(paths.hardware_json, json.dumps(probe(disk=paths.state_dir), indent=2) + "\n", created)
        hardware = json.loads(paths.hardware_json.read_text())
    created += write_seeds(paths, hardware, slot_models, slot_providers, toolchains=toolchains)
    if not paths.admin_token.exists():
        _, token = create_token(paths.tokens_toml, "admin", "admin")
        _create(paths.admin_token, token + "\n", created, mode=0o600)
    return created


def missing_models(paths: Paths) -> list[tuple[str, str, int]]:
    """(slot, catalogue id, bytes) for each enabled slot whose model is a catalogue id that is not
    registered yet: what a load, a request or `hal0 model pull` will download."""
    from hal0.config import load_slots  # the one validator of slot files

    registry = Registry(paths).entries()
    out = []
    for name, slot in load_slots(paths).items():
        ref = read_override(paths, name) or slot.model.default
        entry = catalog_entry(ref, paths.catalog_toml) if ref and not ref.startswith("/") else None
        if slot.enabled and entry is not None and ref not in registry:
            out.append((name, ref, entry.size))
    return out


def describe_missing(missing: list[tuple[str, str, int]]) -> list[str]:
    """Lines for a person: what will be pulled, and how much."""
    if not missing:
        return []
    total = sum(size for _, _, size in missing)
    lines = [f"models to pull ({total / 1e9:.1f} GB; each slot pulls its own when loaded or first asked for, "
             "or now with `hal0 model pull ID`):"]
    lines += [f"  {slot:8} {ref} ({size / 1e9:.2f} GB)" for slot, ref, size in missing]
    return lines
