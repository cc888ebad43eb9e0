"""Configuration: schema, loading/validation and built-in defaults."""

from hal0.config.defaults import builtin_slot, render_slot_toml
from hal0.config.load import SLOT_NAME_RE, is_loopback, load_config, load_slot, load_slots, to_dict
from hal0.config.schema import BUILTIN_SLOTS, PROVIDER_NAMES, RERANK_SLOT, Hal0Config, SlotConfig

__all__ = [
    "BUILTIN_SLOTS",
    "PROVIDER_NAMES",
    "RERANK_SLOT",
    "SLOT_NAME_RE",
    "Hal0Config",
    "SlotConfig",
    "builtin_slot",
    "is_loopback",
    "load_config",
    "load_slot",
    "load_slots",
    "render_slot_toml",
    "to_dict",
]
