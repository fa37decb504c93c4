"""The debug gRPC service `authz.v1.Debug/Explain` (protos/authz/v1/debug.proto).

Explain takes the same CheckRequest Envoy sends and answers with the decision and the rule
trace, evaluated by the same Authorizer as Check. It is served only with `--debug-api`: the
trace shows rule internals (which clause failed, the values compared) that a client of the
API must never see, so the port must be reachable by operators only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import descriptor_pool, message_factory

from authz.authorizer import Authorizer
from authz.debug_descriptor import SERIALIZED
from authz.decision import Decision
from authz.envoy.decode import from_message
from authz.errors import RequestError
from authz.explain import endpoint_rule, explain, is_child_path

FILE = descriptor_pool.Default().AddSerializedFile(SERIALIZED)
SERVICE: str = FILE.services_by_name["Debug"].full_name  # authz.v1.Debug
ExplainResponse = message_factory.GetMessageClass(FILE.message_types_by_name["ExplainResponse"])
CheckRequest = external_auth_pb2.CheckRequest


class DebugServicer:
    """`DebugServicer(lambda: server.authorizer).add_to_server(grpc_server)`."""

    def __init__(self, get_authorizer: Callable[[], Authorizer | None]):
        self.get_authorizer = get_authorizer

    async def Explain(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        authorizer = self.get_authorizer()  # one config version for the whole call
        if authorizer is None:
            return await context.abort(grpc.StatusCode.UNAVAILABLE, "no config loaded")  # raises
        try:
            req = from_message(request)
        except RequestError as exc:
            decision, rule = Decision(False, 400, str(exc), str(exc)), None
        else:
            decision = await authorizer.check(req, trace=True)
            rule = endpoint_rule(authorizer, decision)
        return to_response(decision, explain(decision, rule), authorizer.version)

    def add_to_server(self, server: grpc.aio.Server) -> str:
        """Register on `server`; returns the service's full name (for reflection)."""
        handler = grpc.unary_unary_rpc_method_handler(
            self.Explain,
            request_deserializer=CheckRequest.FromString,
            response_serializer=ExplainResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Explain": handler}),)
        )
        return SERVICE


def to_response(decision: Decision, text: str, version: str) -> Any:
    out = ExplainResponse(text=text, config_version=version)
    d = out.decision
    d.allowed, d.status, d.reason = decision.allowed, decision.status, decision.reason
    d.error_message = "" if decision.allowed else decision.message or ""
    d.service, d.endpoint = decision.service or "", decision.endpoint or ""
    d.dry_run, d.request_id = decision.dry_run, decision.request_id or ""
    trace = decision.trace or []
    for entry in trace:
        depth = sum(1 for other in trace if is_child_path(entry.path, other.path))
        out.trace.add(
            path=entry.path, rule=entry.kind, result=entry.result, detail=entry.detail,
            depth=depth,
        )  # fmt: skip
    return out
