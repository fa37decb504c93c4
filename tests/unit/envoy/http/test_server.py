"""The HTTP Check server on a real socket: every request answered in order, bounds denied,
unframeable streams closed after their answers, never an allow by default."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest

from authz.decision import Decision
from authz.envoy.http import server
from authz.envoy.http.encode import response
from authz.envoy.http.server import Parsed, start_check_http

MAX_BODY = 100


async def handler(parsed: Parsed) -> bytes:
    """Allow `/ok...`; `/slow` answers after a pause (a datastore); deny the rest. The target
    comes back in a header so the order of answers shows."""
    if parsed.target.startswith("/slow"):
        await asyncio.sleep(0.05)
    if parsed.target.startswith(("/ok", "/slow")):
        return response(Decision(True, headers=[("x-target", parsed.target)]))
    return response(Decision(False, 403, "no", parsed.target))


@pytest.fixture
async def port() -> AsyncIterator[int]:
    srv = await start_check_http("127.0.0.1", 0, handler, lambda: MAX_BODY, False)
    yield srv.sockets[0].getsockname()[1]
    srv.close()


async def exchange(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send `data`, read until the server closes or `wait` seconds pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                out += chunk
    except TimeoutError:
        pass
    writer.close()
    return out


def statuses(data: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


async def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    reqs = b"".join(f"GET {t} HTTP/1.1\r\nhost: a\r\n\r\n".encode()
                    for t in ("/slow1", "/ok2", "/no3", "/ok4"))  # fmt: skip
    out = await exchange(port, reqs, wait=0.5)
    assert statuses(out) == [200, 200, 403, 200]
    assert out.index(b"/slow1") < out.index(b"/ok2") < out.index(b"/no3") < out.index(b"/ok4")


async def test_keep_alive_serves_many_requests_on_one_connection(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(3):
        writer.write(f"GET /ok{i} HTTP/1.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 200") and f"/ok{i}".encode() in head
    writer.close()


async def test_malformed_request_is_denied_then_closed(port: int) -> None:
    out = await exchange(port, b"GET /ok1 HTTP/1.1\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    assert statuses(out) == [200, 400]  # the answer before it, then the denial; then EOF


async def test_oversize_body_is_denied_and_the_connection_stays_framed(port: int) -> None:
    body = b"x" * (MAX_BODY + 1)
    data = b"POST /ok1 HTTP/1.1\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    out = await exchange(port, data + b"GET /ok2 HTTP/1.1\r\n\r\n", wait=0.5)
    assert statuses(out) == [413, 200]


async def test_oversize_head_is_denied(port: int) -> None:
    big = b"x-big: " + b"a" * (server.MAX_HEAD_BYTES + 10) + b"\r\n"
    out = await exchange(port, b"GET /ok1 HTTP/1.1\r\n" + big + b"\r\n")
    assert statuses(out) == [431]
    unterminated = await exchange(port, b"GET /ok1 HTTP/1.1\r\n" + big)
    assert statuses(unterminated) == [431]  # and closed: the head never ends


async def test_head_answers_carry_no_body(port: int) -> None:
    out = await exchange(port, b"HEAD /no1 HTTP/1.1\r\n\r\nGET /ok2 HTTP/1.1\r\n\r\n", wait=0.5)
    first, _, rest = out.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 403") and rest.startswith(b"HTTP/1.1 200")


async def test_upgrade_and_connect_are_not_tunnels(port: int) -> None:
    out = await exchange(port, b"CONNECT evil:443 HTTP/1.1\r\nhost: evil\r\n\r\n")
    assert statuses(out) and all(s >= 400 for s in statuses(out))
    out = await exchange(port, b"GET /ok1 HTTP/1.1\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n")
    assert 400 in statuses(out)


async def test_connection_close_and_http10_close_after_the_answer(port: int) -> None:
    assert statuses(await exchange(port, b"GET /ok1 HTTP/1.0\r\n\r\n")) == [200]
    out = await exchange(
        port, b"GET /ok1 HTTP/1.1\r\nconnection: close\r\n\r\nGET /ok2 HTTP/1.1\r\n\r\n"
    )
    assert statuses(out) == [200]


async def test_slowloris_gets_a_timeout_denial(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "REQUEST_SECONDS", 0.2)
    out = await exchange(port, b"GET /ok1 HTTP/1.1\r\nx-slow: ", wait=3)
    assert statuses(out) == [408]


async def test_header_that_is_not_utf8_is_denied(port: int) -> None:
    out = await exchange(port, b"GET /ok1 HTTP/1.1\r\nx-a: \xff\xfe\r\n\r\n", wait=0.5)
    assert statuses(out) == [400]
