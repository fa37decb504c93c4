"""A stack for the identity sources: Envoy from `authz envoy-config --tls-cert --tls-key
--client-ca` (mTLS listener, XFCC SANITIZE_SET, the peer certificate sent to authz on gRPC; on
the HTTP transport, `--transport http`, the XFCC header Envoy sets), `authz serve`, the echo
upstream, a local OpenID Connect provider and a local RFC 7662 introspection endpoint;
certificates made at test time. Each endpoint forces `x-identity` (args.identity) and `x-caller`
(one claim of args.auth) on the upstream request, so what the rules saw is visible in what the
upstream received."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from authz.identity.apikeys import digest
from tests.helpers import free_port
from tests.integration.harness import (
    AuthzServer,
    Envoy,
    run_authz_cli,
    start_authz,
    start_echo,
    start_envoy,
)
from tests.unit.identity.certs import issue, make_ca
from tests.unit.identity.providers import IntrospectionServer, OidcProvider

API_KEY = "azk_integration-billing-key-0123456789"
OPAQUE = "opaque-reports-token-0123456789"
SPIFFE = "spiffe://example.org/ns/default/sa/billing"


def _rule(caller: str) -> dict[str, Any]:
    return {"rule": "and", "clauses": [
        {"rule": "force", "field": "args.headers.x-identity", "value": "args.identity"},
        {"rule": "force", "field": "args.headers.x-caller", "value": caller},
    ]}  # fmt: skip


def _config(echo_port: int, idp: OidcProvider, intro: IntrospectionServer) -> dict[str, Any]:
    def endpoint(path: str, identity: list[str], caller: str) -> dict[str, Any]:
        return {"method": "GET", "path": path, "identity": identity, "rule": _rule(caller)}

    return {
        "project": "identity",
        "auth": {
            "oidc": [{"issuer": idp.issuer, "audience": ["orders"]}],
            "apiKeys": {"keys": [{"sha256": digest(API_KEY),
                                  "claims": {"id": "billing", "role": "service"}}]},
            # xfcc: the HTTP transport reads Envoy's XFCC (never used on gRPC)
            "mtls": {"trustDomains": ["example.org"], "xfcc": True},
            "introspection": [intro.settings(cache="5s", timeout="200ms")],
            "serviceToken": {"enabled": False},  # no key here can sign one
        },
        "services": {"api": {"url": f"http://127.0.0.1:{echo_port}", "endpoints": {
            "user": endpoint("/v1/user", ["jwt"], "args.auth.sub"),
            "billing": endpoint("/v1/billing", ["apiKey"], "args.auth.id"),
            "mesh": endpoint("/v1/mesh", ["mtls"], "args.auth.spiffe"),
            "reports": endpoint("/v1/reports", ["introspection"], "args.auth.sub"),
            "mixed": endpoint("/v1/mixed", ["jwt", "apiKey"], "args.auth.id"),
        }}},
    }  # fmt: skip


@dataclass
class IdentityStack:
    envoy: Envoy
    authz: AuthzServer
    echo: Any
    idp: OidcProvider
    introspection: IntrospectionServer
    pki: Path
    config: Path
    transport: str = "grpc"

    def client(self, who: str | None = "billing") -> httpx.Client:
        """HTTPS to Envoy with `who`'s client certificate (None: without one)."""
        context = ssl.create_default_context(cafile=str(self.pki / "ca.pem"))
        if who is not None:
            context.load_cert_chain(self.pki / f"{who}.pem", self.pki / f"{who}.key")
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.envoy.port}", verify=context, timeout=5,
            trust_env=False,
        )  # fmt: skip

    def seen(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.echo.requests if r["headers"].get("x-request-id") == request_id]

    def logs(self) -> str:
        procs = [self.authz.process, self.envoy.process]
        return "\n".join(f"----- {p.name} -----\n{p.log()}" for p in procs)

    def stop(self) -> None:
        self.envoy.process.stop()
        self.authz.process.stop()
        self.echo.stop()
        self.idp.__exit__(None, None, None)
        self.introspection.__exit__(None, None, None)


def make_pki(directory: Path) -> Path:
    ca = make_ca()
    (directory / "ca.pem").write_text(ca.pem)
    issue(ca, "envoy", ips=("127.0.0.1",), server=True).write(directory, "server")
    issue(ca, "billing", uris=(SPIFFE,), dns=("billing.default.svc",)).write(directory, "billing")
    issue(ca, "evil", uris=("spiffe://evil.example/ns/default/sa/billing",)).write(
        directory, "evil"
    )
    issue(make_ca("another CA"), "billing", uris=(SPIFFE,)).write(directory, "untrusted")
    return directory


def start_identity_stack(log_dir: Path, transport: str = "grpc") -> IdentityStack:
    log_dir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(log_dir)
    idp, intro = OidcProvider().__enter__(), IntrospectionServer().__enter__()
    intro.answers[OPAQUE] = {"active": True, "sub": "reports-job", "scope": "reports:read"}
    echo = start_echo()
    config = log_dir / "identity.yaml"
    config.write_text(yaml.safe_dump(_config(echo.port, idp, intro), sort_keys=False))
    authz = envoy = None
    try:
        check_http = free_port()
        authz = start_authz(
            config, log_dir, extra_args=["--check-http-listen", f"127.0.0.1:{check_http}"]
        )
        envoy_port, admin_port = free_port(), free_port()
        done = run_authz_cli(
            "envoy-config", "--config", str(config), "--transport", transport,
            "--authz-address", f"127.0.0.1:{authz.grpc_port}",
            "--authz-http-address", f"127.0.0.1:{check_http}",
            "--listen", f"127.0.0.1:{envoy_port}", "--admin", f"127.0.0.1:{admin_port}",
            "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
            "--client-ca", str(pki / "ca.pem"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        envoy = start_envoy(yaml.safe_load(done.stdout), log_dir, name=f"envoy-{transport}")
    except BaseException:
        if authz is not None:
            authz.process.stop()
        echo.stop()
        idp.__exit__(None, None, None)
        intro.__exit__(None, None, None)
        raise
    return IdentityStack(envoy, authz, echo, idp, intro, pki, config, transport)
