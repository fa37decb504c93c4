"""`python -m bench.profile_http [N]`: where one HTTP Check's time goes, in process.

The bench's `authz` config and token, the bytes Envoy sends for the `authz-http` scenario's
request, through `AuthzServer.check_http` on one connection of the llhttp server (a fake
transport, one request per read as under Envoy's keep-alive): wall µs per request for each
stage alone and for the whole, then cProfile's top entries."""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from authz.envoy.http.decode import decode
from authz.envoy.http.encode import response
from authz.envoy.http.server import CheckProtocol
from authz.server import AuthzServer, ServeOptions
from bench.keys import make_key
from tests.fuzz.http_targets import FakeTransport

CONFIG = Path(__file__).resolve().parent / "configs" / "authz.yaml"


def request_bytes(token: str) -> bytes:
    """What Envoy 1.40 sends authz for wrk's `GET /` (envoy-config --transport http)."""
    return (
        "GET / HTTP/1.1\r\nhost: 127.0.0.1:10000\r\ncontent-length: 0\r\n"
        f"authorization: Bearer {token}\r\nx-forwarded-proto: http\r\n"
        "x-request-id: 5b3c6f1e-0000-4000-8000-000000000001\r\n"
        "x-envoy-internal: true\r\nx-envoy-expected-rq-timeout-ms: 2000\r\n\r\n"
    ).encode()


async def run(n: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="authz-profile-"))
    key = make_key(workdir)
    import os

    os.environ.update({"BENCH_PUBLIC_KEY": key.public_pem, "BENCH_PRIVATE_KEY": key.private_pem})
    server = AuthzServer(ServeOptions(config=str(CONFIG), watch=0))
    server.authorizer = await _load(server)
    data = request_bytes(key.token({"id": "u1", "role": "admin"}))
    transport = FakeTransport()
    proto = CheckProtocol(server.check_http, lambda: 1 << 20)
    proto.connection_made(transport)

    async def one() -> None:
        proto.data_received(data)
        while proto.worker is not None:
            await asyncio.sleep(0)

    for _ in range(500):
        await one()
    assert transport.out.startswith(b"HTTP/1.1 200"), bytes(transport.out[:200])
    start = time.perf_counter()
    for _ in range(n):
        await one()
    whole = (time.perf_counter() - start) / n * 1e6
    headers = _headers(data)  # as the server hands them over (decode takes them over: copies)
    stages = {
        "decode": lambda: decode("GET", "/", dict(headers), b"", ""),
        "check (Authorizer)": None,
        "encode": lambda: response(decision),
    }
    req = decode("GET", "/", dict(headers), b"", "")
    decision = await server.authorizer.check(req)
    print(f"whole request through the server: {whole:.1f} µs")
    for name, fn in stages.items():
        if fn is None:
            start = time.perf_counter()
            for _ in range(n):
                await server.authorizer.check(decode("GET", "/", dict(headers), b"", ""))
            t = (time.perf_counter() - start) / n * 1e6
            print(f"  {name} (with decode): {t:.1f} µs")
            continue
        start = time.perf_counter()
        for _ in range(n):
            fn()
        print(f"  {name}: {(time.perf_counter() - start) / n * 1e6:.1f} µs")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        await one()
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)
    proto.connection_lost(None)


def _headers(data: bytes) -> dict[str, str]:
    lines = data.decode().split("\r\n")[1:-2]
    return {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}


async def _load(server: AuthzServer):  # type: ignore[no-untyped-def]
    from authz.reload import Reloader

    server.reloader = Reloader(server.options, server._swap, server.metrics)
    return await server.reloader.load_first()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    uvloop.install()
    asyncio.run(run(n))


if __name__ == "__main__":
    main()
