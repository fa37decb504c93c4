"""`authz serve --tls-cert --tls-key --client-ca`: Check over gRPC with TLS, and only callers
holding a certificate the client CA signed (Envoy) get an answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from tests.helpers import free_port, port_open, wait_for
from tests.unit.identity.certs import issue, make_ca

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
project: demo
auth: {serviceToken: {enabled: false}}
services:
  s: {endpoints: {open: {method: GET, path: /open, rule: {rule: allow}}}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca()
    (d / "ca.pem").write_text(ca.pem)
    issue(ca, "authz", dns=("localhost",), server=True).write(d, "server")
    issue(ca, "envoy", uris=("spiffe://example.org/envoy",)).write(d, "envoy")
    issue(make_ca("other CA"), "intruder").write(d, "intruder")
    (d / "config.yaml").write_text(CONFIG)
    return d


@pytest.fixture(scope="module")
def server(pki):
    config = pki / "config.yaml"
    port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--config", str(config),
         "--listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http_port}",
         "--drain", "0s", "--tls-cert", str(pki / "server.pem"),
         "--tls-key", str(pki / "server.key"), "--client-ca", str(pki / "ca.pem")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(http_port) and port_open(port), 15, "authz serve")
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def check(port: int, pki: Path, client: str | None) -> CheckResponse:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{client}.key").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None,
    )
    msg = CheckRequest()
    msg.attributes.request.http.method, msg.attributes.request.http.path = "GET", "/open"
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options) as channel:
        call = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        return CheckResponse.FromString(call(msg.SerializeToString(), timeout=5))


def test_a_caller_with_a_certificate_of_the_client_ca_gets_decisions(server, pki):
    assert check(server, pki, "envoy").status.code == 0


@pytest.mark.parametrize("client", [None, "intruder"])
def test_other_callers_are_refused_in_the_handshake(server, pki, client):
    with pytest.raises(grpc.RpcError) as e:
        check(server, pki, client)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_callers_are_refused(server):
    with grpc.insecure_channel(f"127.0.0.1:{server}") as channel:
        call = channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        with pytest.raises(grpc.RpcError):
            call(CheckRequest().SerializeToString(), timeout=5)


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (["--tls-cert", "server.pem"], "go together"),
        (["--tls-cert", "server.pem", "--tls-key", "absent.key"], "No such file"),
        (["--tls-cert", "server.pem", "--tls-key", "config.yaml"], "not PEM"),
    ],
)
def test_bad_tls_flags_are_usage_errors(pki, flags, why):
    flags = [str(pki / f) if not f.startswith("--") else f for f in flags]
    done = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--config", str(pki / "config.yaml"), *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and why in done.stderr, done.stderr
