"""The HTTP/1.1 server Envoy's ext_authz `http_service` talks to: llhttp (httptools) on the
running (uv)loop, keep-alive and pipelining, every request answered in order.

Every request gets an answer, never a crash or a hang: what cannot be evaluated (a head or a
body over the bounds, a request that times out half-sent) gets a denial; a connection is only
closed once a request cannot be framed at all (malformed, a head that never ends, upgrade),
after the answers to the requests before it. Envoy then denies (`failure_mode_allow: false`).

Checks run eagerly: most never wait (no datastore, no webhook), and a Task per request was
the largest cost of the transport. Each connection has one Task, its `runner`; a Check's
coroutine is first stepped at once, inside the runner's context (so asyncio.timeout and
current_task() see the runner, as they would inside a Task). If it finishes, it is answered
at once; if it waits, the runner takes the same suspended coroutine over and drives it to the
end as a Task would (awaiting what it waits for, passing a cancellation into it), then
answers the requests queued behind it, in order.

What one connection can make the server hold or do is bounded, whatever its client sends
(SECURITY.md, "The HTTP Check port's limits"): at most MAX_PIPELINED requests parsed and
waiting, the rest of a read kept unparsed while reading is paused; a turn of the loop to
other connections after every MAX_PIPELINED answers; nothing more read or answered while the
client does not read its answers (write backpressure), and the connection dropped if that
lasts REQUEST_SECONDS. A listener keeps at most `max_connections` open at once.
"""

from __future__ import annotations

import asyncio
import collections
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import httptools

from authz.decision import Decision
from authz.envoy.http.encode import response

MAX_HEAD_BYTES = 64 * 1024  # Envoy's own default limit on request headers is 60 KiB
REQUEST_SECONDS = 10.0  # from a request's first byte to its last (slowloris)
# Longer than the idle timeout `authz envoy-config` gives Envoy's pool, so Envoy closes first
# and never sends a Check on a connection this side is closing.
IDLE_SECONDS = 600.0
MAX_PIPELINED = 64  # requests parsed and waiting for an answer, at most
MAX_CONNECTIONS = 1024  # open connections per listener (--check-http-max-connections)
# Unanswered bytes buffered for a client before reading and answering pause (Envoy reads its
# answers at once: only a client that does not read reaches this).
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
# The shortest request llhttp completes ("GET / HTTP/1.1\r\n\r\n"; an HTTP/0.9 line is
# shorter but ends the connection): n * _MIN_REQUEST bytes never complete more than n.
_MIN_REQUEST = 18
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


Handler = Callable[[Parsed], Coroutine[Any, Any, bytes]]


def _denial(status: int, message: str) -> bytes:
    return response(Decision(False, status, message, message))


BAD_REQUEST = _denial(400, "the authorization request is malformed")
HEAD_TOO_LARGE = _denial(431, "the request headers are larger than the authorization limit")
BODY_TOO_LARGE = _denial(413, "the request body is larger than the authorization limit")
BAD_HEADER = _denial(400, "a request header is not valid UTF-8")
TIMEOUT = _denial(408, "the authorization request was not received in time")
_CLOSE = object()  # in the queue: close once everything before it is written


class ConnectionCap:
    """The connections one listener has open; beyond `limit`, a new one is closed at once."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True


_NOT_STARTED = object()  # a coroutine handed to the runner before its first step


class CheckProtocol(asyncio.Protocol):
    transport: asyncio.Transport  # set by connection_made, before any other callback

    def __init__(
        self, handler: Handler, max_body: Callable[[], int], cap: ConnectionCap | None = None
    ):
        self.handler = handler
        self.max_body = max_body
        self.cap = cap
        self.parser = httptools.HttpRequestParser(self)
        self.loop = asyncio.get_running_loop()
        self.queue: collections.deque[Parsed | bytes | object] = collections.deque()  # or _CLOSE
        self.runner: asyncio.Task[None] | None = None
        # (coroutine, what it waits for, its request): a Check that waits, for the runner
        self.handoff: asyncio.Future[tuple[Any, Any, Parsed]] = self.loop.create_future()
        self.busy = False  # the runner is answering: requests wait in the queue for it
        self.closing = False
        self.counted = False  # holds one of the cap's connections
        self.rest: memoryview | None = None  # read, not parsed yet: the queue was full
        self.reading = True  # not paused by us
        self.write_paused = False  # the transport's buffer is over WRITE_HIGH
        self.pumping: asyncio.Handle | None = None  # parsing goes on at the next turn
        self._new_message()
        self.in_head = True
        self.head_bytes = 0  # bytes read since the head being parsed began (bounded)
        # One watchdog per connection instead of a timer per request (two timer calls per
        # request were a tenth of its cost): it counts quiet ticks.
        self.tick = REQUEST_SECONDS / _TICKS
        self.done = self.done_seen = 0  # requests completed, and as of the last tick
        self.stalled = self.idle = 0  # ticks with a request half-read / with nothing
        self.closing_ticks = 0
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
        if self.cap is not None:
            self.counted = self.cap.take()
            if not self.counted:  # over the cap: closed at once, nothing read
                self.closing = True
                self.transport.abort()
                return
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self.watchdog = self.loop.call_later(self.tick, self._watch)
        self.runner = self.loop.create_task(self._run())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.rest = None
        if self.counted and self.cap is not None:
            self.counted = False
            self.cap.open -= 1
        for timer in (self.watchdog, self.pumping):
            if timer is not None:
                timer.cancel()
        if self.runner is not None:
            self.runner.cancel()
        if self.handoff.done() and not self.handoff.cancelled():
            self.handoff.result()[0].close()  # handed over, never taken up: not left unawaited

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.rest is None and not self.write_paused:
            if len(data) <= (MAX_PIPELINED - len(self.queue)) * _MIN_REQUEST:
                self._feed(data)  # the usual read: one request, or a few, with room
                return
            self.rest = memoryview(data)
        else:  # reading is paused: only what the transport had read already
            self.rest = memoryview(bytes(self.rest or b"") + data)
        self._pump()

    def _feed(self, data: bytes | memoryview) -> None:
        """Parse `data`, which cannot complete more requests than the queue has room for,
        and answer what it completed."""
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
        elif self.queue:
            self._wake()  # once per read: pipelined requests get one write

    def _pump(self) -> None:
        """Parse the rest of what was read, as far as the queue has room and the client reads
        its answers; after MAX_PIPELINED requests, go on at the next turn of the loop (other
        connections' turn). Read again only once all of it is parsed."""
        self.pumping = None
        budget = self.done + MAX_PIPELINED
        while (rest := self.rest) is not None and not self.closing and not self.write_paused:
            room = MAX_PIPELINED - len(self.queue)
            if room <= 0:
                break  # the runner's answers make room, then pump again
            if self.done >= budget:
                self.pumping = self.loop.call_soon(self._pump)
                break
            size = room * _MIN_REQUEST
            self.rest = rest[size:] if len(rest) > size else None
            self._feed(rest[:size])
        self._read(self.rest is None and not self.write_paused)

    def _read(self, on: bool) -> None:
        if self.closing or on == self.reading:
            return
        self.reading = on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        """The client is not reading its answers: read nothing more, answer nothing more."""
        self.write_paused = True
        self._read(False)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            self._wake()
        self._pump()

    def _fail(self, answer: bytes) -> None:
        """Answer, after the requests before it, and close: the stream cannot be framed."""
        self._read(False)
        self.closing = True
        self.queue.append(answer)
        self.queue.append(_CLOSE)
        self._wake()

    def _watch(self) -> None:
        """Every tick: a request half-read for REQUEST_SECONDS gets 408 and the connection
        closes (slowloris); a connection with nothing to do for IDLE_SECONDS closes; one
        whose client does not read its answers for REQUEST_SECONDS is dropped."""
        if self.closing:  # its last answers have REQUEST_SECONDS to get out, then dropped
            self.closing_ticks = 0 if self.busy else self.closing_ticks + 1
            if self.closing_ticks >= _TICKS:
                self.transport.abort()
            else:
                self.watchdog = self.loop.call_later(self.tick, self._watch)
            return
        progressed, self.done_seen = self.done != self.done_seen, self.done
        # a request half-read, or answers the client does not read
        partial = not self.in_head or self.head_bytes > 0 or self.write_paused
        busy = self.busy  # a Check still running: its datastore's timeout rules
        self.stalled = 0 if progressed or busy or not partial else self.stalled + 1
        self.idle = 0 if progressed or busy or partial else self.idle + 1
        if self.stalled >= _TICKS and self.write_paused:
            self.closing = True  # no answer gets through: drop the connection and its buffer
            self.transport.abort()
        elif self.stalled >= _TICKS:
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

    # --- answering, in order ---------------------------------------------------------

    def _wake(self) -> None:
        """Answer what is queued now, in order; a Check that has to wait goes to the runner,
        with everything behind it."""
        if self.busy or self.runner is None or self.write_paused:
            return
        out: list[bytes] = []
        queue = self.queue
        while queue:
            item = queue.popleft()
            if isinstance(item, Parsed):
                coro = self.handler(item)
                try:
                    _enter_task(self.loop, self.runner)  # asyncio.timeout needs a current task
                except RuntimeError:  # called from inside a task (not by the loop): no eager step
                    waiting_on: Any = _NOT_STARTED
                else:
                    try:
                        waiting_on = coro.send(None)
                    except StopIteration as done:
                        out.append(_answer_for(item, done.value))
                        continue
                    finally:
                        _leave_task(self.loop, self.runner)
                self.busy = True
                self.handoff.set_result((coro, waiting_on, item))
                break
            if isinstance(item, bytes):
                out.append(item)
            else:  # _CLOSE
                self._write_and_close(out)
                return
        if out:
            self.transport.write(b"".join(out))

    def _write_and_close(self, out: list[bytes]) -> None:
        self.queue.clear()
        self.closing = True
        self.transport.write(b"".join(out))
        self.transport.close()

    async def _run(self) -> None:
        """The connection's Task: finishes the Checks that wait, then the queue behind them."""
        while not self.closing:
            coro, waiting_on, item = await self.handoff
            self.handoff = self.loop.create_future()
            try:
                answer = await _finish(coro, waiting_on)
                out = [_answer_for(item, answer)]
                # in this Task already: each Check is simply awaited; once the client stops
                # reading, the rest waits for resume_writing
                while self.queue and not self.write_paused:
                    nxt = self.queue.popleft()
                    if isinstance(nxt, Parsed):
                        out.append(_answer_for(nxt, await self.handler(nxt)))
                    elif isinstance(nxt, bytes):
                        out.append(nxt)
                    else:  # _CLOSE
                        self._write_and_close(out)
                        return
                self.transport.write(b"".join(out))
            finally:
                self.busy = False
            if self.pumping is None:  # from the loop, not this Task: eager again, and fair
                self.pumping = self.loop.call_soon(self._pump)


async def _finish(coro: Coroutine[Any, Any, bytes], waiting_on: Any) -> bytes:
    """Drive a suspended coroutine to its end from inside a Task, as the Task itself would:
    wait for the future it yielded (a bare yield: one loop turn), resume it; a cancellation
    of this Task (asyncio.timeout's deadline, a closed connection) is thrown into it."""
    while True:
        try:
            if waiting_on is _NOT_STARTED:
                pass
            elif waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False
                await waiting_on  # its result or error is the coroutine's to read
        except asyncio.CancelledError as exc:
            if waiting_on is None or not waiting_on.done():
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
        except BaseException:  # the coroutine reads the future itself
            pass
        try:
            waiting_on = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _answer_for(item: Parsed, answer: bytes) -> bytes:
    return _head_of(answer) if item.method == "HEAD" else answer


def _head_of(answer: bytes) -> bytes:
    """A response to HEAD carries no body: Envoy would read body bytes as the next response."""
    return answer[: answer.index(_END_OF_HEAD) + len(_END_OF_HEAD)]


async def start_check_http(
    host: str,
    port: int,
    handler: Handler,
    max_body: Callable[[], int],
    reuse_port: bool,
    max_connections: int = MAX_CONNECTIONS,
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    cap = ConnectionCap(max_connections)
    return await loop.create_server(
        lambda: CheckProtocol(handler, max_body, cap), host, port, reuse_port=reuse_port
    )
