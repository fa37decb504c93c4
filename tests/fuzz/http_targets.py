"""The HTTP Check transport under fuzzing: raw bytes into the llhttp server (one connection),
decoded, checked and encoded on config/example.yaml. A finding: an exception out of the
server, an answer that is not a well-formed HTTP/1.1 response, an internal-error answer, a
Check request left unanswered on an open connection, or an allow on an endpoint that never
allows."""

from __future__ import annotations

import asyncio
from typing import Any

from authz.envoy.http.decode import decode
from authz.envoy.http.encode import response
from authz.envoy.http.server import CheckProtocol, Parsed
from authz.errors import RequestError
from authz.request import Request


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        if self.closed:
            raise AssertionError("a write after close")
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def make_handler(authorizer: Any, seen: list[Any]):  # type: ignore[no-untyped-def]
    async def handle(parsed: Parsed) -> bytes:
        try:
            req: Request = decode(parsed.method, parsed.target, parsed.headers, parsed.body, "")
        except RequestError:
            seen.append(None)
            return response(_bad())
        decision = await authorizer.check(req)
        seen.append(decision)
        return response(decision)

    return handle


def _bad() -> Any:
    from authz.decision import Decision

    return Decision(False, 400, "bad", "bad")


def responses(data: bytes) -> list[int]:
    """Status codes of the answers in `data`; AssertionError when one is not well-formed.
    (An answer to HEAD has a content-length but no body; every body here is JSON, `{`.)"""
    statuses: list[int] = []
    rest = bytes(data)
    while rest:
        end = rest.find(b"\r\n\r\n")
        if not rest.startswith(b"HTTP/1.1 ") or end < 0:
            raise AssertionError(f"malformed answer: {rest[:200]!r}")
        head, rest = rest[:end].decode("latin-1").split("\r\n"), rest[end + 4 :]
        statuses.append(int(head[0].split(" ")[1]))
        fields = dict(line.split(": ", 1) for line in head[1:])
        length = int(fields["content-length"])
        if rest.startswith(b"{"):
            if len(rest) < length:
                raise AssertionError(f"a body shorter than its content-length: {rest[:200]!r}")
            rest = rest[length:]
    return statuses


def serve_bytes(
    loop: asyncio.AbstractEventLoop, authorizer: Any, data: bytes
) -> tuple[list[int], list[Any], bool]:
    """Feed `data` to one connection; (answer statuses, decisions, closed)."""
    seen: list[Any] = []
    transport = FakeTransport()

    async def run() -> None:
        proto = CheckProtocol(make_handler(authorizer, seen), lambda: 1 << 20)
        proto.connection_made(transport)
        proto.data_received(data)
        for _ in range(50):  # let the answering task finish (bounded)
            await asyncio.sleep(0)
            if proto.worker is None:
                break
        proto.connection_lost(None)

    loop.run_until_complete(run())
    return responses(transport.out), seen, transport.closed
