"""Where hal0 keeps its config and state: the one root resolution (SPEC section 2).

| mode   | when                                   | config                 | state               |
|--------|----------------------------------------|------------------------|---------------------|
| home   | ``HAL0_HOME=DIR``                      | DIR/etc                | DIR/var             |
| system | /etc/hal0/hal0.toml exists or --system | /etc/hal0              | /var/lib/hal0       |
| user   | otherwise                              | $XDG_CONFIG_HOME/hal0  | $XDG_DATA_HOME/hal0 |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Paths", "resolve_paths"]


@dataclass(frozen=True)
class Paths:
    """Every file location hal0 uses, derived from two folders."""

    mode: str
    config_dir: Path
    state_dir: Path

    @property
    def hal0_toml(self) -> Path:
        return self.config_dir / "hal0.toml"

    @property
    def slots_dir(self) -> Path:
        return self.config_dir / "slots"

    def slot_toml(self, name: str) -> Path:
        return self.slots_dir / f"{name}.toml"

    def slot_env(self, name: str) -> Path:
        return self.slots_dir / f"{name}.env"

    def slot_state_dir(self, name: str) -> Path:
        return self.state_dir / "slots" / name

    @property
    def tokens_toml(self) -> Path:
        return self.config_dir / "tokens.toml"

    @property
    def admin_token(self) -> Path:
        return self.config_dir / "admin.token"

    @property
    def capabilities_toml(self) -> Path:
        return self.config_dir / "capabilities.toml"

    @property
    def catalog_toml(self) -> Path:
        """The operator's own catalogue entries, over the shipped ones."""
        return self.config_dir / "catalog.toml"

    @property
    def hardware_json(self) -> Path:
        return self.config_dir / "hardware.json"

    @property
    def registry_toml(self) -> Path:
        return self.state_dir / "registry.toml"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def backends_dir(self) -> Path:
        return self.state_dir / "backends"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def responses_dir(self) -> Path:
        """Stored OpenAI Responses, one folder per token id (``previous_response_id``)."""
        return self.state_dir / "responses"

    @property
    def openwebui_dir(self) -> Path:
        """Open WebUI's data, its secret key and hal0's token for it."""
        return self.state_dir / "openwebui"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "hal0.pid"


def resolve_paths(env: Mapping[str, str] | None = None, *, system: bool = False,
                  root: Path = Path("/")) -> Paths:
    """Pick the mode from ``env`` (default ``os.environ``); ``root`` lets tests fake ``/``."""
    env = os.environ if env is None else env
    if env.get("HAL0_HOME"):
        home = Path(env["HAL0_HOME"]).expanduser().absolute()
        return Paths("home", home / "etc", home / "var")
    if system or (root / "etc/hal0/hal0.toml").exists():
        return Paths("system", root / "etc/hal0", root / "var/lib/hal0")
    user_home = Path(env.get("HOME") or Path.home())
    config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config")
    data = Path(env.get("XDG_DATA_HOME") or user_home / ".local/share")
    return Paths("user", config / "hal0", data / "hal0")
