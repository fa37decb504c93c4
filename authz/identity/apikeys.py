"""API keys (`auth.apiKeys`): machine callers identified by a shared key.

Only SHA-256 digests are stored (in the config, in `file`, in memory): a leaked config or
heap dump does not hand out keys. A presented key is hashed and looked up through an index
keyed by a per-process random key (so lookup timing says nothing about the stored digests),
then its digest is compared with `hmac.compare_digest` (constant time). The key file is read
at config load (a bad file is a config error) and polled like the config: a changed file
that parses replaces the table at once; one that does not keeps the last good table.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from authz.config.auth import ApiKey, ApiKeyFile, ApiKeySettings
from authz.errors import TokenError
from authz.identity.keys import Problems

log = logging.getLogger(__name__)

KEY_PREFIX = "azk_"  # marks keys `authz apikey` made: easy to spot in a leaked log or repo
_Table = dict[bytes, tuple[bytes, dict[str, Any]]]  # index -> (digest, claims)


def digest(key: str) -> str:
    """The config's `sha256` of a key: lower-case hex of SHA-256 over its UTF-8 bytes."""
    return hashlib.sha256(key.encode()).hexdigest()


def config_line(sha256: str, claims: dict[str, Any]) -> str:
    """The `auth.apiKeys.keys` entry of a key, as one YAML flow line."""
    return f"- {{sha256: {sha256}, claims: {json.dumps(claims, sort_keys=True)}}}"


def new_key() -> str:
    """A random key: 32 bytes from the OS's CSPRNG, base64url."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKeys:
    def __init__(self, settings: ApiKeySettings, base_dir: Path, problems: Problems):
        self.settings = settings
        self.header = settings.header.lower() if settings.header else None
        self.scheme = settings.scheme.lower() if settings.scheme else None
        self.max_bytes = settings.maxBytes
        self.file = base_dir / settings.file if settings.file else None
        self.problem: str | None = None  # why the last reload of `file` failed (/readyz)
        self._salt = os.urandom(32)
        self._inline = list(settings.keys)
        self._file_digest = b""
        self._task: asyncio.Task[None] | None = None
        from_file: list[ApiKey] = []
        if self.file is not None:
            try:
                from_file, self._file_digest = self._read_file()
            except ValueError as exc:
                problems.add("auth.apiKeys.file", str(exc))
        try:
            self.table = self._build(from_file)
        except ValueError as exc:
            problems.add("auth.apiKeys", str(exc))
            self.table = {}

    def __len__(self) -> int:
        return len(self.table)

    # --- the table ---------------------------------------------------------------------

    def _index(self, raw_digest: bytes) -> bytes:
        return hashlib.blake2b(raw_digest, key=self._salt, digest_size=16).digest()

    def _build(self, from_file: list[ApiKey]) -> _Table:
        table: _Table = {}
        for entry in [*self._inline, *from_file]:
            raw = bytes.fromhex(entry.sha256)
            index = self._index(raw)
            if index in table:
                raise ValueError(f"the key with sha256 {entry.sha256[:12]}... is listed twice")
            table[index] = (raw, dict(entry.claims))
        return table

    def _read_file(self) -> tuple[list[ApiKey], bytes]:
        assert self.file is not None
        try:
            data = self.file.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {self.file}: {exc.strerror or exc}") from None
        try:
            raw = yaml.safe_load(data) or {}
            parsed = ApiKeyFile.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ValueError(f"{self.file}: not a key file ({first})") from None
        return parsed.keys, hashlib.sha256(data).digest()

    # --- per request -------------------------------------------------------------------

    def extract(self, headers: Mapping[str, str]) -> tuple[str | None, bool]:
        """(key, from the authorization header), (None, False) when the request has none;
        TokenError for a key sent twice or malformed."""
        found: list[tuple[str, bool]] = []
        if self.header is not None and self.header in headers:
            found.append((headers[self.header], False))
        if self.scheme is not None and "authorization" in headers:
            scheme, _, rest = headers["authorization"].strip().partition(" ")
            if scheme.lower() == self.scheme:
                found.append((rest, True))
        if not found:
            return None, False
        if len(found) > 1:
            raise TokenError("API key given twice", "ambiguous")
        value, in_authorization = found[0]
        if len(value) > self.max_bytes:
            raise TokenError("API key too large", "too_large")
        value = value.strip()
        # Envoy joins repeated headers with ","; a key has no comma and no whitespace
        if not value or "," in value or len(value.split()) != 1:
            raise TokenError("malformed API key")
        return value, in_authorization

    def claims(self, key: str) -> dict[str, Any]:
        """The claims of a known key (a copy); TokenError otherwise."""
        raw = hashlib.sha256(key.encode()).digest()
        entry = self.table.get(self._index(raw))
        if entry is None or not hmac.compare_digest(entry[0], raw):
            raise TokenError("unknown API key", "unknown_key")
        return dict(entry[1])

    # --- reloading the file ------------------------------------------------------------

    async def start(self) -> None:
        if self.file is not None and self.settings.watch > 0:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch)
            await asyncio.to_thread(self.reload)

    def reload(self) -> bool:
        """Read `file` again; True when a changed, valid file replaced the table."""
        try:
            keys, file_digest = self._read_file()
            if file_digest == self._file_digest:
                return False
            table = self._build(keys)
        except ValueError as exc:
            if self.problem != str(exc):  # logged once per distinct problem, not every poll
                log.error("auth.apiKeys.file: keeping the last good keys: %s", exc)
            self.problem = str(exc)
            return False
        self.table, self._file_digest, self.problem = table, file_digest, None
        log.info("auth.apiKeys.file: reloaded, %d keys", len(table))
        return True
