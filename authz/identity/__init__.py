"""Identity: token extraction, key sets, JWKS, verification, verified-token cache."""
