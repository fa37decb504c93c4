"""The HTTP floor: the least a Python server can do to answer Envoy's ext_authz HTTP
authorization requests. uvloop + asyncio.Protocol + llhttp (httptools, as authz uses), a
header dict per request, a prebuilt 200: the budget `authz-http` is compared with.

`python -m bench.http_floor --listen 127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import httptools

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class Floor(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        self.headers = {}
        self.out.append(OK)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[attr-defined]
            return
        if self.out:
            self.transport.write(b"".join(self.out))  # type: ignore[attr-defined]
            self.out.clear()


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, host, int(port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"http floor listening on {listen}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
