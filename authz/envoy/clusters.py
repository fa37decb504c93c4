"""Where the Envoy of `authz envoy-config` sends requests: the `host:port` flags, the
services' URLs, and one cluster per destination (authz over gRPC or HTTP, each upstream)."""

from __future__ import annotations

import ipaddress
import warnings
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

# envoy-data-plane's generated models trip pydantic deprecation warnings at import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        Http2ProtocolOptions,
        SocketAddress,
        TransportSocket,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import UpstreamTlsContext
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions,
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.google.protobuf import Any as AnyProto

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass
class Upstream:
    cluster: str
    host: str
    port: int
    tls: bool


def split_address(text: str, what: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; ValueError naming the flag."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: expected host:port, got {text!r}")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def socket_address(host: str, port: int) -> Address:
    return Address(socket_address=SocketAddress(address=host, port_value=port))


def upstream(service: str, url: str) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"services.{service}.url: expected http(s)://host[:port], got {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"services.{service}.url: a path is not supported ({url!r})")
    tls = parts.scheme == "https"
    return Upstream(service, parts.hostname, parts.port or (443 if tls else 80), tls)


def cluster(name: str, host: str, port: int, *, http2: bool = False, sni: str = "") -> Cluster:
    c = Cluster(
        name=name,
        type=ClusterDiscoveryType.STATIC if _is_ip(host) else ClusterDiscoveryType.STRICT_DNS,
        connect_timeout=timedelta(seconds=0.25),
        load_assignment=ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                LocalityLbEndpoints(
                    lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=socket_address(host, port)))]
                )
            ],
        ),
    )
    if http2:  # gRPC
        options = HttpProtocolOptions(
            explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
                http2_protocol_options=Http2ProtocolOptions()
            )
        )
        c.typed_extension_protocol_options = {HTTP_OPTIONS: AnyProto.pack(options)}
    if sni:
        tls = UpstreamTlsContext(sni=sni)
        c.transport_socket = TransportSocket(
            name="envoy.transport_sockets.tls", typed_config=AnyProto.pack(tls)
        )
    return c
