"""The runtime resources rules use: identity (verify, mint), datastores, the HTTP client, the
crypto keyring. Built from a validated Config; started once before serving, closed at exit."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from authz.config.schema import Config
from authz.crypto import Keyring
from authz.datastores.base import Datastore
from authz.datastores.factory import close_datastores, open_datastores, ping_datastores

if TYPE_CHECKING:
    import httpx

    from authz.observability.metrics import Metrics

PING_EVERY = 2.0  # seconds between datastore pings (readiness, and reconnecting in time)


class Runtime:
    def __init__(self, config: Config, metrics: Metrics | None = None):
        from authz.identity.identity import Identity

        self.config = config
        self.metrics = metrics  # None: the CLI and tests count nothing
        self._pinger: asyncio.Task[None] | None = None
        self.identity = Identity(config.auth, base_dir=config.base_dir, project=config.project)
        self.datastores: dict[str, Datastore] = {}  # by alias
        # shared by webhooks and JWKS fetches; None until start()
        self.http: httpx.AsyncClient | None = None
        # The keyring is built now so that bad keys are config errors (authz validate).
        self.keyring = Keyring.from_settings(config.crypto) if config.crypto else None
        # The query rules' tables (datastores/schema.Use, set by the Authorizer) and what is
        # wrong with them per datastore alias, for /readyz; rechecked until found right.
        self.queries: list[Any] = []
        self.schema: dict[str, list[str]] = {}
        self._schema_ok: set[str] = set()

    async def start(self) -> None:
        import httpx  # loaded only when serving

        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        await self.identity.start(self.http)
        self.datastores = await open_datastores(self.config)  # a down server does not fail this
        for alias, store in self.datastores.items():
            if self.metrics is not None:
                store.metrics = self.metrics.datastore(alias)
        await ping_datastores(self.datastores)  # so /readyz is right at once
        await self._check_schema()
        if self.datastores:
            self._pinger = asyncio.get_running_loop().create_task(self._ping_loop())

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(PING_EVERY)
            await ping_datastores(self.datastores)
            await self._check_schema()

    async def _check_schema(self) -> None:
        """Check the tables of the datastores not yet found right (a table created later
        clears its problem); one that cannot be reached is checked when it can."""
        from authz.datastores.schema import check_uses

        pending = [u for u in self.queries if u.alias not in self._schema_ok]
        if not pending:
            return
        for alias, problems in (await check_uses(pending, self.datastores)).items():
            if problems:
                self.schema[alias] = problems
            else:
                self.schema.pop(alias, None)
                self._schema_ok.add(alias)

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await close_datastores(self.datastores)
        await self.identity.close()
        if self.http is not None:
            await self.http.aclose()

    def readiness(self) -> dict[str, Any]:
        """Each dependency's state, for /readyz's body. None of them decides readiness: an
        endpoint that needs a failed one answers 503, and restarting would not help."""
        detail: dict[str, Any] = {"identity": "ok" if self.identity.ready else "no key set yet"}
        for alias, store in self.datastores.items():
            detail[f"datastore:{alias}"] = "ok" if store.healthy else "unreachable"
        detail.update(self.identity.dependencies())  # OIDC issuers, introspection, key file
        if self.schema:
            detail["tables"] = [p for problems in self.schema.values() for p in problems]
        return detail
