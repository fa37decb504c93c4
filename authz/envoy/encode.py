"""Decision -> Envoy CheckResponse (DESIGN §4).

Every denial is a CheckResponse carrying `denied_response` with the HTTP status and a JSON
body, never a gRPC error and never `error_response`: Envoy's fail-open setting must not be
able to turn an internal error into an allow.
"""

from __future__ import annotations

import json

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, QueryParameter
from envoy.service.auth.v3.external_auth_pb2 import (
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct
from google.rpc.code_pb2 import OK, PERMISSION_DENIED, UNAUTHENTICATED
from google.rpc.status_pb2 import Status

from authz.decision import Decision
from authz.mutations import PLAN_KEY, encode_plan

_OK_STATUS = Status(code=OK)
_DENIED = Status(code=PERMISSION_DENIED)
_UNAUTHENTICATED = Status(code=UNAUTHENTICATED)
_JSON = HeaderValueOption(header=HeaderValue(key="content-type", value="application/json"))


def _header(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(header=HeaderValue(key=key, value=value))


def encode(decision: Decision) -> CheckResponse:
    if decision.allowed:
        return _ok(decision)
    return _denied(decision)


def _ok(d: Decision) -> CheckResponse:
    ok = OkHttpResponse(
        headers=[_header(k, v) for k, v in d.headers],
        headers_to_remove=d.headers_to_remove,
    )
    if d.query_parameters_to_set:
        ok.query_parameters_to_set.extend(
            QueryParameter(key=k, value=v) for k, v in d.query_parameters_to_set
        )
    if d.query_parameters_to_remove:
        ok.query_parameters_to_remove.extend(d.query_parameters_to_remove)
    if d.response_headers_to_add:
        ok.response_headers_to_add.extend(_header(k, v) for k, v in d.response_headers_to_add)
    response = CheckResponse(status=_OK_STATUS, ok_response=ok)
    if d.plan is not None:  # for ext_proc, under Envoy's envoy.filters.http.ext_authz namespace
        metadata = Struct()
        metadata[PLAN_KEY] = encode_plan(d.plan)
        response.dynamic_metadata.CopyFrom(metadata)
    return response


def _denied(d: Decision) -> CheckResponse:
    body = json.dumps({"error": d.message or "access denied", "requestId": d.request_id})
    headers = [_JSON]
    headers.extend(_header(k, v) for k, v in d.response_headers_to_add)
    denied = DeniedHttpResponse(status=HttpStatus(code=d.status), headers=headers, body=body)
    status = _UNAUTHENTICATED if d.status == 401 else _DENIED
    return CheckResponse(status=status, denied_response=denied)
