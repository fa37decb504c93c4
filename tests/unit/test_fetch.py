"""The outbound fetch policy: which URLs may be fetched (JWKS and webhooks alike), and replies
bounded on the wire and after decoding."""

from __future__ import annotations

import tracemalloc
import zlib

import httpx
import pydantic
import pytest

from authz.config.auth import SecretSettings
from authz.fetch import FetchError, fetch, is_link_local, url_problem
from tests.unit.identity.support import HttpServer, make_identity

METADATA = [
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/latest",  # the same address as one decimal number
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://169.254.43518/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/x",
    "http://169.254.169.254./x",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA/",
]


@pytest.mark.parametrize("url", METADATA)
def test_link_local_and_metadata_hosts_are_refused(url):
    assert "link-local" in (url_problem(url) or "")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://idp/keys", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("http:///keys", "no host"),
        ("https://user:pw@idp/keys", "credentials"),
        ("http://idp:99999/keys", "invalid URL"),
    ],
)
def test_other_bad_urls_are_refused(url, why):
    assert why in (url_problem(url) or "")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/jwks.json", "https://idp.example.com/.well-known/jwks.json",
     "http://10.0.0.5/hook", "http://[::1]/x", "http://keys.internal/x"],
)  # fmt: skip
def test_plain_http_and_private_addresses_stay_allowed(url):
    assert url_problem(url) is None
    assert not is_link_local(url.split("/")[2].rsplit(":", 1)[0].strip("[]"))


@pytest.mark.parametrize("url", METADATA[:3])
def test_jwks_url_follows_the_same_policy_as_webhooks(url):
    with pytest.raises(pydantic.ValidationError, match="link-local"):
        SecretSettings(jwksUrl=url)


def _gzip_of_zeros(size: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    chunk = bytes(1 << 20)
    out = [z.compress(chunk) for _ in range(size >> 20)]
    return b"".join(out) + z.flush()


# `content-encoding: gzip, gzip`: a few hundred bytes that decode to 64 MiB.
BOMB = zlib.compress(_gzip_of_zeros(64 << 20), 9, wbits=31)


async def test_a_compressed_jwks_reply_is_refused_before_it_is_decoded():
    assert len(BOMB) < 1000
    with HttpServer(BOMB) as server:
        server.headers = {"content-encoding": "gzip, gzip"}
        ident = make_identity({"secrets": [{"jwksUrl": server.url}]})
        async with httpx.AsyncClient(trust_env=False) as http:
            tracemalloc.start()
            try:
                await ident.start(http)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                await ident.close()
        assert server.requests == ["/jwks.json"]
    assert not ident.ready
    assert peak < 8 << 20  # never decoded: decoding alone would take 64 MiB


async def _serve_and_fetch(body: bytes, headers: dict[str, str], limit: int) -> bytes:
    with HttpServer(body) as server:
        server.headers = headers
        async with httpx.AsyncClient(trust_env=False) as http:
            reply = await fetch(http, "GET", server.url, limit=limit, timeout=2)
    return reply.body


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity"])
async def test_any_content_encoding_is_refused(encoding):
    with pytest.raises(FetchError, match="encoded"):
        await _serve_and_fetch(b"{}", {"content-encoding": encoding}, 1000)


async def test_the_reply_is_capped_and_identity_is_asked_for():
    assert await _serve_and_fetch(b'{"a": 1}', {"content-encoding": "identity"}, 8) == b'{"a": 1}'
    with pytest.raises(FetchError, match="too large"):
        await _serve_and_fetch(b'{"a": 12}', {}, 8)
