"""Reading the token from the request: header + scheme, cookie, and the refusals (row 19)."""

from __future__ import annotations

import pytest

from authz.errors import TokenError
from tests.unit.identity.support import make_identity

TOK = "aaa.bbb.ccc"


def extract(headers: dict[str, str], **token_source) -> str | None:
    auth = {"token": token_source} if token_source else {}
    return make_identity(auth).extract(headers)


def refused(headers: dict[str, str], reason: str = "", **token_source) -> None:
    with pytest.raises(TokenError) as e:
        extract(headers, **token_source)
    assert reason in e.value.reason


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_header(scheme):
    assert extract({"authorization": f"{scheme} {TOK}"}) == TOK


def test_absent_is_none():
    assert extract({}) is None
    assert extract({"x-other": "Bearer x"}) is None
    assert extract({"cookie": f"session={TOK}"}) is None  # no cookie source configured


def test_two_authorization_values():
    refused({"authorization": f"Bearer {TOK},Bearer other"}, "several")
    refused({"authorization": f"Bearer {TOK}, Basic dXNlcjpwdw=="}, "several")


@pytest.mark.parametrize("value", [f"Basic {TOK}", f"Token {TOK}", TOK, f"Bearer{TOK}"])
def test_wrong_scheme(value):
    refused({"authorization": value}, "scheme")


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    ", ""])
def test_empty_token(value):
    refused({"authorization": value})


def test_whitespace_inside_token():
    refused({"authorization": f"Bearer {TOK} extra"}, "malformed")


def test_oversized_token_refused_before_parsing():
    refused({"authorization": "Bearer " + "a" * 100 * 1024}, "too large")
    refused({"authorization": "Bearer " + "a" * 8193}, "too large")
    assert extract({"authorization": "Bearer " + "a" * 8192}) == "a" * 8192


def test_custom_header_and_scheme():
    assert extract({"x-token": f"JWT {TOK}"}, header="X-Token", scheme="JWT") == TOK
    refused({"x-token": f"Bearer {TOK}"}, "scheme", header="x-token", scheme="JWT")


def test_header_without_scheme():
    assert extract({"x-token": TOK}, header="x-token", scheme=None) == TOK
    refused({"x-token": f"{TOK},{TOK}"}, "several", header="x-token", scheme=None)


@pytest.mark.parametrize(
    "cookie",
    [
        f"session={TOK}",
        f"a=1; session={TOK}; b=2",
        f'session="{TOK}"',
        f"theme=dark, session={TOK}",
    ],
)
def test_cookie_source(cookie):
    assert extract({"cookie": cookie}, cookie="session") == TOK


def test_cookie_only_ignores_authorization():
    assert extract({"authorization": "Basic dXNlcjpwdw=="}, cookie="session") is None
    assert extract({"cookie": "other=1"}, cookie="session") is None


def test_cookie_refusals():
    refused({"cookie": f"session={TOK}; session=other"}, "several", cookie="session")
    refused({"cookie": f"session={TOK}, session=other"}, "several", cookie="session")
    refused({"cookie": "session="}, "empty", cookie="session")
    refused({"cookie": "session=" + "a" * 9000}, "too large", cookie="session")


def test_header_and_cookie_together():
    both = {"header": "authorization", "cookie": "session"}
    assert extract({"authorization": f"Bearer {TOK}"}, **both) == TOK
    assert extract({"cookie": f"session={TOK}"}, **both) == TOK
    refused({"authorization": f"Bearer {TOK}", "cookie": f"session={TOK}"}, "both", **both)


def test_a_token_known_as_verified_skips_the_whitespace_and_size_checks():
    ident = make_identity({"maxTokenBytes": 256})
    extractor = ident.extractor
    spaced, huge = "a b.c.d", "x" * 300
    with pytest.raises(TokenError, match="malformed"):
        extractor.extract({"authorization": f"Bearer {spaced}"})
    with pytest.raises(TokenError, match="too large"):
        extractor.extract({"authorization": f"Bearer {huge}"})
    # Only verified tokens are in `verified` (none of these could be): what it would skip.
    verified = {spaced, huge}
    assert extractor.extract({"authorization": f"Bearer {spaced}"}, verified) == spaced
    assert extractor.extract({"authorization": f"Bearer {huge}"}, verified) == huge
    with pytest.raises(TokenError, match="scheme"):  # checked whatever is in `verified`
        extractor.extract({"authorization": f"Basic {spaced}"}, verified)
