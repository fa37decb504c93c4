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


class TokenError(AuthzError):
    """The caller's token is missing, malformed, expired or unverifiable (-> 401)."""

    status = 401

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class RequestError(AuthzError):
    """The request cannot be evaluated: invalid JSON body, too deep, too large (-> 400)."""

    status = 400


class UnsupportedMediaType(RequestError):
    """A body the rules read that is not declared as JSON (-> 415)."""

    status = 415


class DependencyError(AuthzError):
    """A datastore, webhook or key server failed or timed out (-> 503, never an allow)."""

    status = 503
