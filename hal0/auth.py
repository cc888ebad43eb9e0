"""Bearer tokens: minting, salted hashes in tokens.toml, and constant-time checks.

A token reads ``hal0_<id>_<secret>``. Only ``sha256(salt + secret)`` is stored,
keyed by the public id, so a check costs one hash. The file is the state: the
CLI edits it under a lock (with or without a running server) and the server's
``TokenStore`` re-reads it whenever its mtime or size changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomli_w

from hal0.atomic import atomic_write
from hal0.errors import AuthInvalid, ConfigInvalid

__all__ = ["SCOPES", "Scope", "TokenRecord", "TokenStore", "check_secret_file", "create_token", "list_tokens",
           "revoke_token"]

Scope = Literal["admin", "inference", "metrics"]
SCOPES: tuple[Scope, ...] = ("admin", "inference", "metrics")  # metrics: GET /metrics only


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    scope: Scope
    salt: str
    hash: str
    created_at: str


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode("utf-8", "surrogatepass")).hexdigest()


def _read(file: Path) -> list[TokenRecord]:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigInvalid(str(file), "", f"cannot be read ({e.strerror})") from None
    try:
        data = tomllib.loads(raw.decode())
        records = [TokenRecord(**t) for t in data.get("token", [])]
        for r in records:
            bytes.fromhex(r.salt)
    except UnicodeDecodeError as e:
        raise ConfigInvalid(str(file), "", f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (tomllib.TOMLDecodeError, TypeError, AttributeError, ValueError, RecursionError) as e:
        raise ConfigInvalid(str(file), "token", f"unreadable token file ({e})") from None
    return records


def check_secret_file(file: Path) -> None:
    """Raise ConfigInvalid if ``file`` (a token file) can be read by anyone but its owner."""
    try:
        mode = file.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if mode & 0o077:
        raise ConfigInvalid(str(file), "", f"holds secrets but its mode is {mode:04o}, readable by others: "
                            f"run `chmod 600 {file}` (and check who could have read it)")


def _write(file: Path, records: list[TokenRecord]) -> None:
    body = tomli_w.dumps({"token": [r.__dict__ for r in records]})
    atomic_write(file, "# hal0 API tokens: salted hashes only. Manage with `hal0 token`.\n" + body,
                 mode=0o600)


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file.parent / f".{file.name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_token(file: Path, name: str, scope: Scope) -> tuple[TokenRecord, str]:
    """Mint a token, store its hash, and return the record and the plain token (shown once)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}")
    tid, secret, salt = secrets.token_hex(4), secrets.token_urlsafe(32), secrets.token_hex(16)
    rec = TokenRecord(tid, name, scope, salt, _hash(salt, secret),
                      time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    with _locked(file):
        _write(file, [*_read(file), rec])
    return rec, f"hal0_{tid}_{secret}"


def list_tokens(file: Path) -> list[TokenRecord]:
    return _read(file)


def revoke_token(file: Path, token_id: str) -> bool:
    """Remove token ``token_id``; False if there was none."""
    with _locked(file):
        records = _read(file)
        kept = [r for r in records if r.id != token_id]
        if len(kept) == len(records):
            return False
        _write(file, kept)
    return True


class TokenStore:
    """The server's view of tokens.toml, refreshed when the file changes."""

    def __init__(self, file: Path) -> None:
        self._file = file
        self._stamp: tuple[int, int] | None = None
        self._by_id: dict[str, TokenRecord] = {}
        # id -> (sha256 of the whole token, record): tokens that passed since the file last changed
        self._verified: dict[str, tuple[bytes, TokenRecord]] = {}

    def _refresh(self) -> None:
        try:
            st = self._file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._by_id = {r.id: r for r in _read(self._file)}
            self._verified = {}
            self._stamp = stamp

    def verify(self, token: str) -> TokenRecord:
        """The record for ``token``; raises AuthInvalid. Constant time in the secret.

        The file is looked at (stat) on every call, so a revocation applies to the next request;
        a token already verified against the current file is checked against a digest of it (still
        compared in constant time) instead of being salted and hashed again. Neither the token nor
        any part of it is ever put in an error or a log line."""
        self._refresh()
        prefix, _, rest = token.partition("_")
        tid, _, secret = rest.partition("_")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        known = self._verified.get(tid)
        if known is not None and hmac.compare_digest(known[0], digest):
            return known[1]
        rec = self._by_id.get(tid) if prefix == "hal0" else None
        expected = rec.hash if rec else "0" * 64
        ok = hmac.compare_digest(_hash(rec.salt if rec else "00", secret), expected)
        if rec is None or not ok:
            raise AuthInvalid("the API token is not valid (revoked or mistyped)")
        self._verified[tid] = (digest, rec)
        return rec
