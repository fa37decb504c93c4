"""Hot reload: the config file is watched (and SIGHUP reloads). A new version is loaded and
compiled off the event loop, its runtime started, then swapped in atomically; an invalid file
keeps the last good version serving and reports why."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authz.authorizer import Authorizer
from authz.config.load import load_config
from authz.errors import ConfigError
from authz.observability.metrics import Metrics
from authz.runtime import Runtime

log = logging.getLogger("authz.reload")

RETIRE_AFTER = 30.0  # seconds an old version's runtime stays open for Checks still using it
SETTLE = 0.05  # seconds a changed file must stay the same before it is loaded


class Reloader:
    def __init__(
        self,
        options: Any,
        swap: Callable[[Authorizer], Authorizer | None],
        metrics: Metrics | None = None,
    ):
        self.path = Path(options.config)
        self.options = options
        self.swap = swap
        self.metrics = metrics
        self.last_error: list[str] = []
        self.reloads = 0
        self._digest = b""
        self._watch: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def _build(self) -> tuple[Authorizer, bytes]:
        """Runs in a worker thread: read, validate, compile (the slow part of a reload)."""
        digest = hashlib.sha256(self.path.read_bytes()).digest()
        config = load_config(self.path)
        authorizer = Authorizer(
            config,
            Runtime(config, self.metrics),
            dry_run=self.options.dry_run,
            metrics=self.metrics,
        )
        return authorizer, digest

    async def load_first(self) -> Authorizer:
        authorizer, self._digest = await asyncio.to_thread(self._build)
        await authorizer.runtime.start()
        self._result(True, authorizer.version)
        return authorizer

    async def reload(self, why: str) -> bool:
        async with self._lock:
            try:
                new, digest = await asyncio.to_thread(self._build)
            except ConfigError as exc:
                self._rejected(why, exc.errors)
                return False
            except OSError as exc:
                self._rejected(why, [f"{self.path}: cannot read: {exc.strerror or exc}"])
                return False
            except Exception as exc:  # a bug in loading must not kill the watcher task
                log.exception("config reload (%s) failed unexpectedly", why)
                self._rejected(why, [f"{self.path}: cannot be loaded: {type(exc).__name__}"])
                return False
            try:
                await new.runtime.start()
            except Exception as exc:  # a runtime that cannot start is rejected like a bad file
                await new.runtime.close()
                self._rejected(why, [f"cannot start the new version: {exc}"])
                return False
            self._digest = digest
            old = self.swap(new)
            self.last_error = []
            self.reloads += 1
            self._result(True, new.version)
            log.info("config reloaded (%s): version %s", why, new.version)
            if old is not None:
                self._retire(old)
            return True

    def _rejected(self, why: str, errors: list[str]) -> None:
        self.last_error = errors
        self._result(False, "")
        log.error("config reload (%s) rejected, the last good version keeps serving:", why)
        for line in errors:
            log.error("  %s", line)

    def _result(self, ok: bool, version: str) -> None:
        if self.metrics is None:
            return
        if ok:
            self.metrics.config_loaded(version)
        else:
            self.metrics.config_rejected()

    def _retire(self, old: Authorizer) -> None:
        async def later() -> None:
            try:
                await asyncio.sleep(RETIRE_AFTER)
            finally:  # also when shutting down (close_retired): its pools and clients
                await old.runtime.close()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # --- watching --------------------------------------------------------------------------

    def start_watching(self) -> None:
        if self.options.watch > 0:
            self._watch = asyncio.get_running_loop().create_task(self._poll())

    def stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()

    async def close_retired(self) -> None:
        """Close the old versions still waiting out RETIRE_AFTER (at shutdown, once no Check
        runs any more), rather than leaving their connections to the process's exit."""
        tasks = list(self._retiring)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self) -> None:
        """Poll the file's content hash: works for plain files and Kubernetes ConfigMap
        symlink swaps alike, with nothing but the stdlib. A change is loaded once the content
        has stayed the same for SETTLE seconds, so that a file caught half-written in place
        (truncated, then written) is not reported as a rejected config."""
        while True:
            await asyncio.sleep(self.options.watch)
            with contextlib.suppress(OSError):
                digest = await asyncio.to_thread(self._file_digest)
                if digest == self._digest:
                    continue
                await asyncio.sleep(SETTLE)
                if await asyncio.to_thread(self._file_digest) != digest:
                    continue  # still being written: the next poll looks again
                self._digest = digest  # an invalid file is reported once, not every poll
                await self.reload("file changed")

    def _file_digest(self) -> bytes:
        return hashlib.sha256(self.path.read_bytes()).digest()
