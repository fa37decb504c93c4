"""The one policy for every outbound HTTP fetch: JWKS, OIDC discovery, token introspection,
webhooks (and any later key or token service).

- The URL (checked at config load): http or https, a host, no credentials in it, and never a
  link-local address (169.254.0.0/16, fe80::/10: the cloud metadata service) in any spelling
  the resolver accepts (`2852039166`, `0xa9.0xfe.0xa9.0xfe`, `::ffff:169.254.169.254`), nor a
  metadata host name. Plain http stays allowed for local services and tests; https is what
  authenticates the server and keeps the reply from being read or changed on the way.
- The reply: no redirect is followed; only `identity` encoding is asked for and accepted (a
  compressed reply could grow without bound when decoded, so it is refused before it is
  read), and the bytes read are capped, so the cap holds on the wire and after decoding.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authz.errors import DependencyError

METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "instance-data"})


class FetchError(DependencyError):
    """The fetch failed or its reply broke the policy (-> 503 where a request waits on it)."""


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes  # read only for a 2xx reply, else empty


def url_problem(url: str) -> str | None:
    """Why `url` may not be fetched, or None when it may."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"must be an http or https URL, got {url!r}"
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL are not allowed"
    if is_link_local(host):
        return f"link-local address {host} (cloud metadata) is not allowed"
    return None


def is_link_local(host: str) -> bool:
    """A link-local address or a metadata host name, however the address is spelled."""
    name = host.rstrip(".").lower()
    if name in METADATA_HOSTS:
        return True
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        try:  # the shorthand forms getaddrinfo also accepts: 2852039166, 0xa9.0xfe.43518
            ip = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local


async def fetch(
    http: Any,
    method: str,
    url: str,
    *,
    limit: int,
    timeout: float,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> Reply:
    """One request under the policy; FetchError when the reply is refused.

    A 3xx is returned as it came (never followed); the caller decides what it means."""
    hdrs = {**(headers or {}), "accept-encoding": "identity"}
    request = http.build_request(method, url, headers=hdrs, content=content, timeout=timeout)
    response = await http.send(request, stream=True, follow_redirects=False)
    try:
        if not 200 <= response.status_code < 300:
            return Reply(response.status_code, b"")
        return Reply(response.status_code, await read_capped(response, limit))
    finally:
        await response.aclose()


async def read_capped(response: Any, limit: int) -> bytes:
    """The raw body of an identity-encoded reply, at most `limit` bytes."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(f"the reply is encoded ({encoding}); only identity is accepted")
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise FetchError(f"the reply is too large (over {limit} bytes)")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise FetchError(f"the reply is too large (over {limit} bytes)")
    return bytes(body)
