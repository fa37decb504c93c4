"""authz/observability/masking.py: secrets by key name and by shape."""

from __future__ import annotations

import base64
import json
import os

from authz.observability.masking import mask

# --- masking -------------------------------------------------------------------------------


def _jwt() -> str:
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': 'alice'})}.c2lnbmF0dXJlLWJ5dGVz"


JWT = _jwt()
ENVELOPE = "v1.k1." + base64.urlsafe_b64encode(os.urandom(40)).decode().rstrip("=")


def test_mask_keys_and_secret_shaped_values():
    record = {
        "requestId": "r-1",
        "reason": "token expired",
        "headers": {
            "authorization": "Bearer abc",
            "Cookie": "session=s3cr3t-cookie",
            "x-sc-token": "opaque-service-token",
            "x-forwarded-for": "10.0.0.1",
            "x-custom": f"prefix {JWT}",
        },
        "params": {
            "password": "hunter2",
            "client_secret": "cs-1",
            "email": ENVELOPE,
            "items": [{"note": JWT}, "plain"],
            "host": "api.example.com",
            "version": "v1.2.3",
        },
        "token": JWT,
    }
    out = mask(record)
    assert out["requestId"] == "r-1"
    assert out["reason"] == "token expired"
    assert out["headers"] == {
        "authorization": "***",
        "Cookie": "***",
        "x-sc-token": "***",
        "x-forwarded-for": "10.0.0.1",
        "x-custom": "***",
    }
    assert out["params"]["password"] == "***"
    assert out["params"]["client_secret"] == "***"
    assert out["params"]["email"] == "***"
    assert out["params"]["items"] == [{"note": "***"}, "plain"]
    assert out["params"]["host"] == "api.example.com"  # three dotted words are not a JWT
    assert out["params"]["version"] == "v1.2.3"  # nor is a version an envelope
    assert out["token"] == "***"
    assert record["params"]["password"] == "hunter2"  # the input is not changed


def test_mask_bounds_depth():
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["a"] = {}
        node = node["a"]
    json.dumps(mask(deep))  # no RecursionError, still serialisable


# --- decision log ----------------------------------------------------------------------------
