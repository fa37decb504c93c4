"""The exception hierarchy. Each kind maps to one HTTP status of a denial.

Exceptions are for what stops an evaluation early (bad token, bad body, a datastore down);
an ordinary failing rule is a `Failure` value, not an exception (see rules/base.py).
"""


class AuthzError(Exception):
    """Base of every error this package raises on purpose."""

    status = 500


class ConfigError(AuthzError):
    """The configuration is invalid. `errors` holds one 'path: message' line per problem."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# The failure kinds of a token: the only values of the token-failure metric label (a label
# value never comes from a request, so a flood of odd tokens cannot grow /metrics).
TOKEN_FAILURE_KINDS = frozenset(
    ("malformed", "too_large", "unknown_key", "signature", "expired", "not_yet_valid",
     "issuer", "audience", "claims", "service_token", "error",
     # the other identity sources (docs/identity.md)
     "ambiguous", "inactive", "untrusted")
)  # fmt: skip


class TokenError(AuthzError):
    """The caller's token is missing, malformed, expired or unverifiable (-> 401).

    `reason` is for the decision log and the operator; `kind` (one of TOKEN_FAILURE_KINDS)
    is what metrics count."""

    status = 401

    def __init__(self, reason: str, kind: str = "malformed"):
        self.reason = reason
        self.kind = kind if kind in TOKEN_FAILURE_KINDS else "error"
        super().__init__(reason)


class RequestError(AuthzError):
    """The request cannot be evaluated: invalid JSON body, too deep, too large (-> 400)."""

    status = 400


class UnsupportedMediaType(RequestError):
    """A body the rules read that is not declared as JSON (-> 415)."""

    status = 415


class CryptoError(RequestError):
    """A value cannot be decrypted: malformed, tampered, another field's, or an unknown key.

    A RequestError (400) because the value came from the request; on the response side the
    caller turns it into a 502. The message never contains the value or key material."""


class ResponseError(AuthzError):
    """A response action could not be applied: the client gets a 502, never the raw body."""

    status = 502


class PlanError(AuthzError):
    """The body plan ext_proc received is not one this version can apply (-> 500/502)."""


class ListenError(AuthzError):
    """`authz serve` cannot listen on an address (in use, not permitted, not local)."""


class DependencyError(AuthzError):
    """A datastore, webhook or key server failed or timed out (-> 503, never an allow)."""

    status = 503
