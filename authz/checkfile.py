"""`authz check`: requests described as JSON, evaluated offline, decisions as JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from authz.peer import NO_PEER, Peer
from authz.request import Request

if TYPE_CHECKING:
    from authz.authorizer import Authorizer

_KEYS = {"service", "endpoint", "method", "path", "headers", "body", "peer"}


def read_requests(text: str) -> tuple[list[dict[str, Any]], bool]:
    """Parse the input: one object or an array of them. ValueError names what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the requests file is not valid JSON: {exc}") from None
    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError("expected a JSON object or an array of objects")
    for n, item in enumerate(items):
        unknown = set(item) - _KEYS
        if unknown:
            raise ValueError(f"request [{n}]: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(item.get("path", "/"), str) or not item.get("path", "/").startswith("/"):
            raise ValueError(f"request [{n}]: path must be a string starting with '/'")
        if not isinstance(item.get("headers", {}), dict):
            raise ValueError(f"request [{n}]: headers must be an object")
        peer = item.get("peer")
        if peer is not None and (
            not isinstance(peer, dict)
            or set(peer) - {"principal", "certificate"}
            or not all(isinstance(v, str) for v in peer.values())
        ):
            raise ValueError(
                f"request [{n}]: peer must be an object of strings: principal, certificate"
            )
    return items, single


def to_request(item: dict[str, Any], n: int) -> Request:
    body = item.get("body")
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    context = {k: item[k] for k in ("service", "endpoint") if item.get(k)}
    headers = {str(k).lower(): str(v) for k, v in item.get("headers", {}).items()}
    if raw:  # like `curl --json`: a body is JSON unless the item says otherwise
        headers.setdefault("content-type", "application/json")
    return Request.from_target(
        str(item.get("method", "GET")).upper(),
        item.get("path", "/"),
        headers=headers,
        body=raw,
        context=context,
        request_id=headers.get("x-request-id", f"check-{n}"),
        peer=_peer(item),
    )


def _peer(item: dict[str, Any]) -> Peer | None:
    """As the gRPC transport reports the connection: a `peer` (principal and PEM, as Envoy
    verified them), else a connection without a client certificate. Only `"peer": null` asks
    for the HTTP transport's view (no connection facts; XFCC when auth.mtls.xfcc is on)."""
    if "peer" not in item:
        return NO_PEER
    peer = item["peer"]
    if peer is None:
        return None
    return Peer(peer.get("principal", ""), peer.get("certificate", "")) or NO_PEER


async def run_checks(authorizer: Authorizer, items: list[dict[str, Any]], trace: bool) -> list[Any]:
    await authorizer.runtime.start()
    try:
        out = []
        for n, item in enumerate(items):
            decision = await authorizer.check(to_request(item, n), trace=trace)
            out.append(decision.to_json())
        return out
    finally:
        await authorizer.runtime.close()
