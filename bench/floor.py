"""The gRPC floor: a bare grpc.aio ext_authz Check server that always says OK.

`python -m bench.floor --listen 127.0.0.1:PORT`. It parses each CheckRequest (as any real
server must) and answers a prebuilt OK, so it costs what gRPC in Python costs and nothing
more: the budget authz is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import grpc
from envoy.service.auth.v3 import external_auth_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

OK = pb.CheckResponse()
OK.status.code = 0  # google.rpc.Code.OK
OK.ok_response.SetInParent()


class Floor(pb_grpc.AuthorizationServicer):
    async def Check(self, request: pb.CheckRequest, context: object) -> pb.CheckResponse:
        return OK


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    pb_grpc.add_AuthorizationServicer_to_server(Floor(), server)
    if server.add_insecure_port(listen) == 0:
        raise SystemExit(f"cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"floor listening on {listen}", flush=True)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop  # as authz does when installed

        uvloop.install()
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
