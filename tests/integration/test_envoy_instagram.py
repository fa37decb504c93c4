"""Through a real Envoy: the seeds' Instagram rule end to end (config/example.yaml's
`social.profile`, envoy/envoy.yaml's route `social.profile`).

A profile is readable by its owner, by anyone with a token when it is public, and by its
followers: an `or` of a `match` and two `query` rules on the embedded SQLite datastore, seeded
from authz/datastores/examples/instagram.sql (alice public; bob and carol private; alice
follows bob, bob follows carol) into the harness's temporary AUTHZ_DATA_DIR.

Every decision is checked both ways Envoy can reach the endpoint: the route's
context_extensions, and the `plain` listener where authz matches the path template.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.integration.harness import (
    EXAMPLE_CONFIG,
    ROOT,
    SECRET,
    Stack,
    bearer,
    data_dir,
    json_body,
    start_stack,
    token,
)

pytestmark = pytest.mark.integration

PRIVATE = "this profile is private"  # the rule's `error`
ALICE = {"id": "alice", "role": "user"}  # public profile; follows bob
BOB = {"id": "bob", "role": "user"}  # private; follows carol
CAROL = {"id": "carol", "role": "user"}  # private
STRANGER = {"id": "u1", "role": "user"}  # no profile, follows nobody


@pytest.fixture(scope="module")
def stack(log_dir: Path) -> Iterator[Stack]:
    s = start_stack(EXAMPLE_CONFIG, log_dir, plain=True)
    yield s
    s.stop()


def get(
    stack: Stack,
    client: httpx.Client,
    path: str,
    who: dict[str, Any] | None = None,
    *,
    plain: bool = False,
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """GET `path` (sent as written: no re-encoding) through Envoy; the response and what the
    upstream received of it (matched by a fresh x-request-id)."""
    rid = str(uuid.uuid4())
    headers = {"x-request-id": rid, **(bearer(token(who)) if who else {})}
    url = httpx.URL(stack.envoy.url("/", plain)).copy_with(raw_path=path.encode())
    resp = client.get(url, headers=headers)
    return resp, stack.seen(rid)


def allowed(resp: httpx.Response, seen: list[dict[str, Any]]) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    assert len(seen) == 1, "an allowed request must reach the upstream exactly once"
    return seen[0]


def denied(resp: httpx.Response, seen: list[Any], status: int, error: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    assert seen == [], "a denied request reached the upstream"
    if status == 400 and not resp.headers.get("content-type", "").startswith("application/"):
        return  # Envoy's own rejection (escaped slash), before authz
    assert resp.headers["content-type"].startswith("application/json")
    body = json_body(resp)
    assert set(body) == {"error", "requestId"}, body
    if error is not None:
        assert body["error"] == error


def test_the_database_is_a_seeded_temporary_file_outside_the_repo() -> None:
    assert (data_dir() / "app.db").is_file()
    assert not data_dir().is_relative_to(ROOT)


@pytest.mark.parametrize("plain", [False, True], ids=["context-extensions", "path-template"])
class TestDecisions:
    def test_public_profile_for_any_authenticated_user(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        for who in (STRANGER, BOB, CAROL, ALICE):
            resp, seen = get(stack, client, "/v1/profiles/alice", who, plain=plain)
            upstream = allowed(resp, seen)
            assert upstream["path"] == "/v1/profiles/alice"
            service = jwt.decode(upstream["headers"]["x-sc-token"], SECRET, algorithms=["HS256"])
            assert service["iss"] == "demo"

    def test_private_profile_for_a_follower(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        resp, seen = get(stack, client, "/v1/profiles/bob", ALICE, plain=plain)
        allowed(resp, seen)
        resp, seen = get(stack, client, "/v1/profiles/carol", BOB, plain=plain)
        allowed(resp, seen)

    def test_private_profile_for_its_owner(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        resp, seen = get(stack, client, "/v1/profiles/carol", CAROL, plain=plain)
        allowed(resp, seen)

    def test_private_profile_refused_to_a_non_follower(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        # Following is one-way: bob follows carol, carol does not follow bob.
        for who, profile in [(STRANGER, "bob"), (CAROL, "bob"), (ALICE, "carol")]:
            resp, seen = get(stack, client, f"/v1/profiles/{profile}", who, plain=plain)
            denied(resp, seen, 403, PRIVATE)
            assert "www-authenticate" not in resp.headers

    def test_no_token_is_401_even_for_a_public_profile(
        self, stack: Stack, client: httpx.Client, plain: bool
    ) -> None:
        for profile in ("alice", "bob"):
            resp, seen = get(stack, client, f"/v1/profiles/{profile}", plain=plain)
            denied(resp, seen, 401, "missing token")
            assert resp.headers["www-authenticate"].startswith("Bearer")
        headers = {"authorization": "Bearer not-a-jwt"}
        resp = client.get(stack.envoy.url("/v1/profiles/alice", plain), headers=headers)
        assert resp.status_code == 401

    def test_unknown_profile_is_403(self, stack: Stack, client: httpx.Client, plain: bool) -> None:
        for who in (STRANGER, ALICE):
            resp, seen = get(stack, client, "/v1/profiles/nobody", who, plain=plain)
            denied(resp, seen, 403, PRIVATE)


# Path parameters that try to widen the queries: SQL injection, Mongo-style operators, LIKE
# wildcards, case folding, NUL bytes, a second segment. Each one must be plainly denied.
INJECTIONS = {
    "sql-or": "%27%20OR%201%3D1%20--",  # ' OR 1=1 --
    "sql-or-quoted": "bob%27%20OR%20%271%27%3D%271",  # bob' OR '1'='1
    "sql-comment": "bob%27--",  # bob'--
    "sql-union": "x%27%20UNION%20SELECT%20%2A%20FROM%20profiles--",
    "sql-stacked": "bob%27%3B%20DROP%20TABLE%20followers%3B--",
    "mongo-ne": "%7B%22%24ne%22%3Anull%7D",  # {"$ne":null}
    "mongo-gt": "%7B%22%24gt%22%3A%22%22%7D",  # {"$gt":""}
    "like-percent": "%25",  # %
    "like-underscore": "___",
    "case": "BOB",
    "nul": "bob%00",
    "trailing-space": "bob%20",
    "encoded-unreserved": "%62ob",  # bob, spelled with %62
    "semicolon": "bob;isPublic=1",
}


@pytest.mark.parametrize("plain", [False, True], ids=["context-extensions", "path-template"])
@pytest.mark.parametrize("param", list(INJECTIONS.values()), ids=list(INJECTIONS))
def test_injection_in_the_path_param_is_denied(
    stack: Stack, client: httpx.Client, param: str, plain: bool
) -> None:
    resp, seen = get(stack, client, f"/v1/profiles/{param}", STRANGER, plain=plain)
    assert resp.status_code in (400, 403), (param, resp.status_code, resp.text)
    denied(resp, seen, resp.status_code)


def test_escaped_slashes_never_reach_authz_or_the_upstream(
    stack: Stack, client: httpx.Client
) -> None:
    resp, seen = get(stack, client, "/v1/profiles/alice%2F..%2Fbob", STRANGER)
    denied(resp, seen, 400)


def test_query_string_does_not_change_the_profile(stack: Stack, client: httpx.Client) -> None:
    for query in ("?userId=alice", "?isPublic=true", "?followerId=u1&profileId=alice"):
        resp, seen = get(stack, client, f"/v1/profiles/bob{query}", STRANGER)
        denied(resp, seen, 403, PRIVATE)


def test_the_database_was_not_changed(stack: Stack, client: httpx.Client) -> None:
    """After every attempt above (the module's tests run in order): the rows are intact, so
    the decisions are still the seeded ones."""
    resp, seen = get(stack, client, "/v1/profiles/bob", ALICE)
    allowed(resp, seen)
    resp, seen = get(stack, client, "/v1/profiles/bob", STRANGER)
    denied(resp, seen, 403, PRIVATE)
