"""The body plan: what Check decided for the bodies of one request, carried to ext_proc.

Check cannot change bodies, so for endpoints with body or `res.*` field rules it puts a plan
in the ext_authz dynamic metadata (one JSON string, so numbers keep their type), and ext_proc
applies it without evaluating any rule again. This module owns the plan's format, its body
hash, and its encoding and parsing; envoy/encode.py and envoy/extproc.py only carry it.

    {"v": 1, "bodyHash": "<sha256 hex of the request body Check saw>",
     "request": [FieldChange.op(), ...], "response": [ResponseAction.to_json(), ...]}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from authz.crypto import Keyring
from authz.documents import ResponseAction
from authz.errors import PlanError, ResponseError

VERSION = 1
PLAN_KEY = "plan"  # key in the ext_authz dynamic metadata (namespace envoy.filters.http.ext_authz)
# Over Envoy's HTTP transport the plan travels as this Check response header, which Envoy
# turns into dynamic metadata under the same namespace (`dynamic_metadata_from_headers`).
PLAN_HEADER = "x-authz-body-plan"
# Where ext_proc looks for the plan in that namespace, in order: PLAN_KEY from a gRPC Check,
# PLAN_HEADER from an HTTP one (never both from one Check).
METADATA_KEYS = (PLAN_KEY, PLAN_HEADER)
# gRPC metadata (`x-authz-plan: required`) that the generated Envoy config sets on the ext_proc
# streams of routes whose endpoint has body or response field rules: there, no plan is an error.
PLAN_REQUIRED_METADATA = "x-authz-plan"


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


EMPTY_HASH = body_hash(b"")


@dataclass(slots=True)
class Plan:
    body_hash: str
    request: list[dict[str, Any]]  # FieldChange.op()s on the JSON body
    response: list[ResponseAction]

    def authorizes(self, body: bytes) -> bool:
        """Whether `body` is the request body Check decided on."""
        return body_hash(body) == self.body_hash


def build(
    body: bytes, request: list[dict[str, Any]], response: list[ResponseAction]
) -> dict[str, Any]:
    """The plan of one allowed request, as the JSON object `encode` writes."""
    return {
        "v": VERSION,
        "bodyHash": body_hash(body),
        "request": request,
        "response": [a.to_json() for a in response],
    }


def encode(plan: dict[str, Any]) -> str:
    return json.dumps(plan, separators=(",", ":"))


def parse(text: str, keyring: Keyring | None) -> Plan:
    """The plan JSON written by `encode`; PlanError when malformed."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise PlanError("unknown plan version")
        hashed, request = data["bodyHash"], data["request"]
        response = [ResponseAction.from_json(a, keyring) for a in data["response"]]
    except (ValueError, KeyError, TypeError, ResponseError) as exc:
        raise PlanError(f"malformed plan: {exc}") from None
    if not isinstance(hashed, str) or not isinstance(request, list):
        raise PlanError("malformed plan")
    return Plan(hashed, request, response)
