"""The bench's RS256 key (made at run time, TEST ONLY), its JWKS and the tokens."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KID = "bench-rs256"
ISSUER = "bench"
AUDIENCE = "bench"


@dataclass(frozen=True)
class BenchKey:
    private_pem: str
    public_pem: str
    jwks: str  # {"keys": [...]} for Envoy's local_jwks

    def token(self, claims: dict[str, object], ttl_s: int = 4 * 3600) -> str:
        """An RS256 token for the same issuer/audience that both Envoy and authz check."""
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl_s, **claims}
        return jwt.encode(payload, self.private_pem, algorithm="RS256", headers={"kid": KID})


def make_key(directory: Path) -> BenchKey:
    """A fresh RSA-2048 key; the PEMs are also written to `directory` for debugging."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    (directory / "private.pem").write_text(private_pem)
    (directory / "public.pem").write_text(public_pem)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
    return BenchKey(private_pem, public_pem, json.dumps({"keys": [jwk]}))
