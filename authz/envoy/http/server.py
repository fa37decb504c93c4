"""The HTTP/1.1 server Envoy's ext_authz `http_service` talks to: llhttp (httptools) on the
running (uv)loop, keep-alive and pipelining, every request answered in order.

Every request gets an answer, never a crash or a hang: what cannot be evaluated (a head or a
body over the bounds, a request that times out half-sent) gets a denial; a connection is only
closed once a request cannot be framed at all (malformed, a head that never ends, upgrade),
after the answers to the requests before it. Envoy then denies (`failure_mode_allow: false`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import httptools

from authz.decision import Decision
from authz.envoy.http.encode import response

MAX_HEAD_BYTES = 64 * 1024  # Envoy's own default limit on request headers is 60 KiB
REQUEST_SECONDS = 10.0  # from a request's first byte to its last (slowloris)
# Longer than the idle timeout `authz envoy-config` gives Envoy's pool, so Envoy closes first
# and never sends a Check on a connection this side is closing.
IDLE_SECONDS = 600.0
MAX_PIPELINED = 64  # requests waiting for an answer before reading pauses
_MAX_HEADERS = 1000
_TICKS = 5  # watchdog ticks per REQUEST_SECONDS
_END_OF_HEAD = b"\r\n\r\n"


@dataclass(slots=True)
class Parsed:
    """One framed request, as the handler gets it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Parsed], Awaitable[bytes]]


def _denial(status: int, message: str) -> bytes:
    return response(Decision(False, status, message, message))


BAD_REQUEST = _denial(400, "the authorization request is malformed")
HEAD_TOO_LARGE = _denial(431, "the request headers are larger than the authorization limit")
BODY_TOO_LARGE = _denial(413, "the request body is larger than the authorization limit")
BAD_HEADER = _denial(400, "a request header is not valid UTF-8")
TIMEOUT = _denial(408, "the authorization request was not received in time")
_CLOSE = object()  # in the queue: close once everything before it is written


class CheckProtocol(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before any other callback

    def __init__(self, handler: Handler, max_body: Callable[[], int]):
        self.handler = handler
        self.max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_running_loop()
        self.queue: collections.deque[Parsed | bytes | object] = collections.deque()  # or _CLOSE
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.paused = False
        self._new_message()
        self.in_head = True
        self.head_bytes = 0  # bytes read since the head being parsed began (bounded)
        # One watchdog per connection instead of a timer per request (two timer calls per
        # request were a tenth of its cost): it counts quiet ticks.
        self.tick = REQUEST_SECONDS / _TICKS
        self.done = self.done_seen = 0  # requests completed, and as of the last tick
        self.stalled = self.idle = 0  # ticks with a request half-read / with nothing
        self.watchdog: asyncio.TimerHandle | None = None

    def _new_message(self) -> None:
        self.url = b""
        self.raw: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.headers: dict[str, str] | None = None
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_limit = 0

    # --- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_server: a stream
        self.watchdog = self.loop.call_later(self.tick, self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BAD_REQUEST)  # no upgrade: the rest of the stream is not HTTP/1.1
            return
        except httptools.HttpParserError:
            self._fail(BAD_REQUEST)
            return
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            self._fail(HEAD_TOO_LARGE)  # a head that does not end cannot be framed

    def _fail(self, answer: bytes) -> None:
        """Answer, after the requests before it, and close: the stream cannot be framed."""
        self.closing = True
        self.transport.pause_reading()
        self.queue.append(answer)
        self.queue.append(_CLOSE)
        self._wake()

    def _watch(self) -> None:
        """Every tick: a request half-read for REQUEST_SECONDS gets 408 and the connection
        closes (slowloris); a connection with nothing to do for IDLE_SECONDS closes."""
        if self.closing:
            return
        progressed, self.done_seen = self.done != self.done_seen, self.done
        partial = not self.in_head or self.head_bytes > 0
        busy = self.worker is not None  # a Check still running: its datastore's timeout rules
        self.stalled = 0 if progressed or busy or not partial else self.stalled + 1
        self.idle = 0 if progressed or busy or partial else self.idle + 1
        if self.stalled >= _TICKS:
            self._fail(TIMEOUT)
        elif self.idle * self.tick >= IDLE_SECONDS:
            self.closing = True
            self.transport.close()
        else:
            self.watchdog = self.loop.call_later(self.tick, self._watch)

    # --- llhttp callbacks ------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name, value))  # decoded once the head is complete
        self.head_size += len(name) + len(value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        self.body_limit = self.max_body()
        raw = self.raw
        if len(raw) > _MAX_HEADERS or self.head_size > MAX_HEAD_BYTES:
            return  # answered 431 (the request can still be framed)
        try:
            # header names are tokens (llhttp checks): latin-1 is their ASCII, fastest
            headers = {n.decode("latin-1").lower(): v.decode() for n, v in raw}
        except UnicodeDecodeError:
            return  # answered 400
        if len(headers) < len(raw):  # a repeated name: one value, comma-joined (as Envoy does)
            headers = {}
            for n, v in raw:
                key, text = n.decode("latin-1").lower(), v.decode()
                headers[key] = f"{headers[key]},{text}" if key in headers else text
        self.headers = headers

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size <= self.body_limit:
            self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("ascii")
        headers = self.headers
        item: Parsed | bytes
        if headers is None:
            too_large = len(self.raw) > _MAX_HEADERS or self.head_size > MAX_HEAD_BYTES
            item = HEAD_TOO_LARGE if too_large else BAD_HEADER
        elif self.body_size > self.body_limit:
            item = BODY_TOO_LARGE
        else:
            target = self.url.decode("utf-8", "surrogateescape")
            item = Parsed(method, target, headers, b"".join(self.body) if self.body else b"")
        if method == "HEAD" and isinstance(item, bytes):
            item = _head_of(item)
        self.queue.append(item)
        if not self.parser.should_keep_alive():
            self.queue.append(_CLOSE)
            self.closing = True
        self._new_message()
        self.in_head = True
        self.done += 1
        if len(self.queue) > MAX_PIPELINED and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    # --- answering, in order ---------------------------------------------------------

    def _wake(self) -> None:
        if self.worker is None:
            self.worker = self.loop.create_task(self._answer())

    async def _answer(self) -> None:
        """Answer every queued request in order; one write per burst of pipelined ones."""
        out: list[bytes] = []
        queue = self.queue
        try:
            while queue:
                item = queue.popleft()
                if isinstance(item, Parsed):
                    answer = await self.handler(item)
                    out.append(_head_of(answer) if item.method == "HEAD" else answer)
                elif isinstance(item, bytes):
                    out.append(item)
                else:  # _CLOSE
                    queue.clear()
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
            self.transport.write(b"".join(out))
        finally:
            self.worker = None
        if self.paused and not self.closing:
            self.paused = False
            self.transport.resume_reading()


def _head_of(answer: bytes) -> bytes:
    """A response to HEAD carries no body: Envoy would read body bytes as the next response."""
    return answer[: answer.index(_END_OF_HEAD) + len(_END_OF_HEAD)]


async def start_check_http(
    host: str, port: int, handler: Handler, max_body: Callable[[], int], reuse_port: bool
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: CheckProtocol(handler, max_body), host, port, reuse_port=reuse_port
    )
