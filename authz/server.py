"""The server's lifecycle: the gRPC server (Check, ext_proc, health, reflection, Debug) and
the HTTP side (/healthz, /readyz, /metrics), start, reload swaps, drain and stop.

The Check handler is authz/checks.py; `--workers` is authz/workers.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from authz.authorizer import Authorizer
from authz.checks import AUTH_SERVICE, CheckHandler
from authz.envoy.extproc import ExtProcServicer
from authz.envoy.http.server import start_check_http
from authz.errors import ListenError
from authz.http import start_http
from authz.observability.decisionlog import DecisionLog
from authz.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from authz.observability.metrics import Metrics
from authz.reload import Reloader

log = logging.getLogger("authz.server")

# Signals the parent of --workers forwards to every worker.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class ServeOptions:
    config: str
    listen: str = "0.0.0.0:9001"
    http_listen: str = "0.0.0.0:9002"
    workers: int = 1
    drain: float = 5.0  # seconds of not-ready-but-serving after SIGTERM (docs/deploy.md)
    grace: float = 15.0  # seconds in-flight Checks get to finish once we stop accepting
    dry_run: bool = False
    watch: float = 1.0  # seconds between checks of the config file for changes (0: off)
    decision_log: str = "off"  # off | stdout | a file path
    decision_log_sample_allows: float = 1.0  # fraction of allows logged (denials: all)
    debug_api: bool = False  # serve authz.v1.Debug/Explain (rule traces: operators only)
    # gRPC over TLS (PEM paths); client_ca: only clients it signed may call (Envoy's identity)
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    check_http_listen: str = ""  # Envoy's ext_authz HTTP transport, beside gRPC ("": off)
    check_http_prefix: str = ""  # http_service.path_prefix, removed from every Check path


class AuthzServer(CheckHandler):
    def __init__(self, options: ServeOptions):
        self.options = options
        self.check_http_prefix = options.check_http_prefix
        self.authorizer: Authorizer | None = None
        self.draining = False
        self.grpc: grpc.aio.Server | None = None
        self.http: asyncio.Server | None = None
        self.check_http_server: asyncio.Server | None = None
        self.health = health.aio.HealthServicer()
        self._stopped = asyncio.Event()
        self.reloader: Reloader | None = None
        self.metrics = Metrics()
        self.decisions = DecisionLog("off")  # replaced in start(): its thread must not fork

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        opts = self.options
        self.decisions = DecisionLog(
            opts.decision_log,
            opts.decision_log_sample_allows,
            on_drop=self.metrics.decision_log_dropped.inc,
        )
        self.reloader = Reloader(self.options, self._swap, self.metrics)
        self.authorizer = await self.reloader.load_first()
        reuse = self.options.workers > 1
        self.grpc = grpc.aio.server(options=[("grpc.so_reuseport", 1 if reuse else 0)])
        self.grpc.add_generic_rpc_handlers((self._check_handler(),))
        generic = _GenericHandlersOnly(self.grpc)
        extproc = ExtProcServicer(lambda: self.authorizer).add_to_server(generic)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, generic)
        services = [AUTH_SERVICE, extproc, health.SERVICE_NAME, reflection.SERVICE_NAME]
        if opts.debug_api:
            from authz.debug import DebugServicer  # only loaded when asked for

            services.append(DebugServicer(lambda: self.authorizer).add_to_server(generic))
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(services), generic
        )  # what reflection.enable_server_reflection does for a grpc.aio server
        self._listen_grpc(reuse)
        host, port = _split(self.options.http_listen)
        try:
            self.http = await start_http(host, port, self._http, reuse)
        except OSError as exc:
            await self.grpc.stop(None)
            why = exc.strerror or str(exc)
            raise ListenError(f"cannot listen on {self.options.http_listen}: {why}") from None
        await self._listen_check_http(reuse)
        await self.grpc.start()
        for name in ("", AUTH_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "authz serving: gRPC %s, HTTP %s, config %s (version %s), %d endpoints",
            self.options.listen, self.options.http_listen, self.options.config,
            self.authorizer.version, len(self.authorizer.endpoints),
        )  # fmt: skip
        self.reloader.start_watching()

    async def _listen_check_http(self, reuse: bool) -> None:
        address = self.options.check_http_listen
        if not address:
            return
        assert self.grpc is not None  # created by start()
        try:
            host, port = _split(address)
            self.check_http_server = await start_check_http(
                host, port, self.check_http, self._max_body, reuse
            )
        except (OSError, ValueError) as exc:
            await self.grpc.stop(None)
            if self.http is not None:
                self.http.close()
            why = getattr(exc, "strerror", None) or exc
            raise ListenError(f"cannot listen on {address}: {why}") from None
        log.info("authz serving Check over HTTP on %s", address)

    def _max_body(self) -> int:
        authorizer = self.authorizer
        return authorizer.config.limits.maxBodyBytes if authorizer is not None else 0

    def _listen_grpc(self, reuse: bool) -> None:
        address = self.options.listen
        probe(address, reuse)  # the OS's reason, before grpc logs its own lines
        try:
            assert self.grpc is not None  # created by start()
            credentials = grpc_credentials(self.options)
            if credentials is None:
                bound = self.grpc.add_insecure_port(address)
            else:
                bound = self.grpc.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind to address ...": in use, or not ours
            bound = 0
        if bound == 0:
            raise ListenError(f"cannot listen on {address}: address in use or not available")

    def _swap(self, new: Authorizer) -> Authorizer | None:
        """Install a new config version; Checks already running keep the one they started with."""
        old, self.authorizer = self.authorizer, new
        return old

    def _check_handler(self) -> grpc.GenericRpcHandler:
        # A generic handler, on purpose: see _GenericHandlersOnly.
        return grpc.method_handlers_generic_handler(
            AUTH_SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )

    async def stop(self, drain: float) -> None:
        """Readiness goes false first, then stop accepting and let in-flight Checks finish."""
        if self.draining:
            return
        self.draining = True
        await self.health.enter_graceful_shutdown()
        if drain > 0:
            log.info("draining for %.1fs before stopping", drain)
            await asyncio.sleep(drain)
        if self.reloader is not None:
            self.reloader.stop_watching()
        if self.http is not None:
            self.http.close()
        if self.check_http_server is not None:
            self.check_http_server.close()  # open connections finish their requests
        if self.grpc is not None:
            await self.grpc.stop(self.options.grace)
        if self.authorizer is not None:
            await self.authorizer.runtime.close()
        if self.reloader is not None:
            await self.reloader.close_retired()
        await asyncio.to_thread(self.decisions.close)
        log.info("authz stopped")
        self._stopped.set()

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_signal, self.options.drain)
        loop.add_signal_handler(signal.SIGINT, self._on_signal, 0.0)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        # A worker starts with these blocked (_run_workers); one that arrived meanwhile is
        # delivered now, to the handlers above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        await self._stopped.wait()

    def _on_signal(self, drain: float) -> None:
        asyncio.get_running_loop().create_task(self.stop(drain))

    def _on_hup(self) -> None:
        if self.reloader is not None:
            asyncio.get_running_loop().create_task(self.reloader.reload("SIGHUP"))

    # --- HTTP ----------------------------------------------------------------------------

    async def _http(self, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready, detail = self.readiness()
            body = json.dumps({"ready": ready, **detail}).encode() + b"\n"
            return (200 if ready else 503), "application/json", body
        if path == "/metrics":
            return 200, METRICS_CONTENT_TYPE, self.metrics.render()
        return 404, "text/plain", b"not found\n"

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: a valid config is loaded and not draining; dependencies are only reported."""
        if self.authorizer is None:
            return False, {"config": "not loaded"}
        detail = self.authorizer.runtime.readiness()
        out: dict[str, Any] = {"config": self.authorizer.version, **detail}
        if self.reloader is not None and self.reloader.last_error:
            out["lastReload"] = {"ok": False, "errors": self.reloader.last_error}
        if self.draining:
            out["draining"] = True
        return not self.draining, out


class _GenericHandlersOnly:
    """The server as a generated `add_*_to_server` sees it: generic handlers only.

    Generated code also registers each method as a "registered method", and grpc.aio keeps
    a call request pending per registered method and waits on all of them for every RPC it
    accepts, a cost per Check for each registered method (figures: docs/performance.md,
    "Figures behind the code's choices"). Every service here is served through its generic
    handler instead."""

    def __init__(self, server: grpc.aio.Server):
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        pass  # the generic handler registered alongside serves these methods


def grpc_credentials(options: ServeOptions) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port; with a client CA, a caller without a certificate it signed is
    refused in the handshake (so only Envoy can ask for decisions). None: plaintext."""
    if options.tls_cert is None:
        return None
    read = Path.read_bytes  # the CLI checked that each file is readable PEM
    ca = read(Path(options.client_ca)) if options.client_ca else None
    return grpc.ssl_server_credentials(
        [(read(Path(options.tls_key or "")), read(Path(options.tls_cert)))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def probe(address: str, reuse: bool) -> None:
    """ListenError with the OS's reason when `host:port` cannot be bound as grpc would."""
    try:
        host, port = _split(address)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError):
        return  # not host:port (unix:..., a name grpc resolves itself): grpc decides
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise ListenError(f"cannot listen on {address}: {why}") from None
