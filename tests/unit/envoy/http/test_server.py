"""The HTTP Check server on a real socket: every request answered in order, bounds denied,
unframeable streams closed after their answers, never an allow by default."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import AsyncIterator, Callable

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
    if parsed.target.startswith("/deadline"):  # a datastore that outlives its timeout
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(5)
        except TimeoutError:
            return response(Decision(False, 503, "timed out", parsed.target))
    if parsed.target.startswith("/task"):  # what a Check sees: always inside a Task
        task = asyncio.current_task()
        assert task is not None and not task.done()
        await asyncio.sleep(0)
        assert asyncio.current_task() is task
    if parsed.target.startswith(("/ok", "/slow", "/task")):
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


async def test_a_timeout_inside_a_check_fires_and_the_connection_goes_on(port: int) -> None:
    """Checks start eagerly, outside the loop's scheduling: asyncio.timeout must still find
    its task and cancel exactly the waiting Check, which answers; the next request is served
    on the same connection, and the timeout leaves no cancellation behind."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for target in ("/deadline1", "/ok2", "/deadline3", "/slow4", "/ok5"):
        writer.write(f"GET {target} HTTP/1.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        expected = b"HTTP/1.1 503" if target.startswith("/deadline") else b"HTTP/1.1 200"
        assert head.startswith(expected), (target, head)
        length = int(re.search(rb"content-length: (\d+)", head, re.I)[1])
        await reader.readexactly(length)
    writer.close()


async def test_a_check_runs_inside_one_task_across_its_awaits(port: int) -> None:
    out = await exchange(port, b"GET /task1 HTTP/1.1\r\n\r\nGET /ok2 HTTP/1.1\r\n\r\n", 0.5)
    assert statuses(out) == [200, 200]
    assert out.index(b"/task1") < out.index(b"/ok2")


async def test_pipelined_timeouts_and_fast_checks_keep_their_order(port: int) -> None:
    targets = ("/ok1", "/deadline2", "/ok3", "/slow4", "/no5", "/deadline6", "/ok7")
    reqs = b"".join(f"GET {t} HTTP/1.1\r\n\r\n".encode() for t in targets)
    out = await exchange(port, reqs, wait=1.0)
    assert statuses(out) == [200, 503, 200, 200, 403, 503, 200]
    positions = [out.index(t.encode()) for t in targets]
    assert positions == sorted(positions)


# --- what one client can make the server hold or do --------------------------------------


class Recording(server.CheckProtocol):
    """The server's protocol, keeping its instances and the most requests ever queued."""

    made: list[Recording] = []
    peak = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Recording.made.append(self)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # a full pipe, soon
        super().connection_made(transport)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        Recording.peak = max(Recording.peak, len(self.queue))


@pytest.fixture
async def recorded(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(server, "CheckProtocol", Recording)
    monkeypatch.setattr(Recording, "made", [])
    monkeypatch.setattr(Recording, "peak", 0)
    srv = await start_check_http("127.0.0.1", 0, handler, lambda: MAX_BODY, False)
    yield srv.sockets[0].getsockname()[1]
    srv.close()


def flood(port: int, n: int, target: str = "/ok") -> socket.socket:
    """A client that sends n pipelined requests at once and reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    data = f"GET {target} HTTP/1.1\r\n\r\n".encode() * n
    with contextlib.suppress(BlockingIOError):
        sock.send(data)  # as much as the kernel takes
    return sock


async def wait_until(condition: Callable[[], bool], deadline: float = 3.0) -> None:
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_flood_that_is_never_read_is_bounded_and_others_are_answered(
    recorded: int,
) -> None:
    calls = 0

    async def counting(parsed: Parsed) -> bytes:
        nonlocal calls
        calls += 1
        return await handler(parsed)

    srv = await start_check_http("127.0.0.1", 0, counting, lambda: MAX_BODY, False)
    port = srv.sockets[0].getsockname()[1]
    sock = flood(port, 20_000)  # 400 kB of requests in one send
    try:
        await wait_until(lambda: bool(Recording.made))
        (proto,) = Recording.made
        await wait_until(lambda: proto.write_paused)  # its answers are not read
        seen = calls
        await asyncio.sleep(0.3)
        assert calls == seen < 20_000  # no more work done for it
        assert Recording.peak <= server.MAX_PIPELINED
        assert proto.transport.get_write_buffer_size() <= server.WRITE_HIGH + 64 * 1024
        # another connection is answered meanwhile
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ok-other HTTP/1.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 200") and b"/ok-other" in head
        writer.close()
    finally:
        sock.close()
        srv.close()


async def test_a_client_that_never_reads_is_dropped(
    recorded: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "REQUEST_SECONDS", 0.2)
    sock = flood(recorded, 20_000)
    try:
        await wait_until(lambda: bool(Recording.made))
        (proto,) = Recording.made
        await wait_until(lambda: proto.write_paused)
        await wait_until(lambda: proto.transport.is_closing())
    finally:
        sock.close()


@pytest.mark.parametrize("target", ["/ok", "/task"])  # answered at once / by the runner
async def test_more_than_max_pipelined_in_one_read_are_all_answered(
    recorded: int, target: str
) -> None:
    n = 40 * server.MAX_PIPELINED
    reader, writer = await asyncio.open_connection("127.0.0.1", recorded)
    writer.write(f"GET {target} HTTP/1.1\r\n\r\n".encode() * n)
    out = b""
    async with asyncio.timeout(10):
        while out.count(b"HTTP/1.1 200") < n:
            out += await reader.read(65536)
    assert statuses(out) == [200] * n
    assert Recording.peak <= server.MAX_PIPELINED
    writer.write(b"GET /ok-last HTTP/1.1\r\n\r\n")  # and the connection reads on
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert b"/ok-last" in head
    writer.close()


async def test_connections_over_the_cap_are_closed_at_once() -> None:
    srv = await start_check_http("127.0.0.1", 0, handler, lambda: MAX_BODY, False, 2)
    port = srv.sockets[0].getsockname()[1]
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        assert await exchange(port, b"GET /ok1 HTTP/1.1\r\n\r\n") == b""  # closed, unanswered
        for _, writer in held:  # the held ones are served
            writer.write(b"GET /ok2 HTTP/1.1\r\n\r\n")
        for reader, _ in held:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            assert head.startswith(b"HTTP/1.1 200")
        held.pop()[1].close()
        async with asyncio.timeout(3):  # its place is free once the server saw it close
            while statuses(await exchange(port, b"GET /ok3 HTTP/1.1\r\n\r\n", 0.3)) != [200]:
                pass
    finally:
        for _, writer in held:
            writer.close()
        srv.close()
