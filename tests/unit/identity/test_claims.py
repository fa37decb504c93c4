"""Claims after the signature: times with leeway (J12), types (J14), audience, required claims."""

from __future__ import annotations

import pytest

from authz.errors import TokenError
from tests.unit.identity.support import HS_SECRET, Clock, hs_token, make_identity, token

NOW = 1_800_000_000.0
LEEWAY = 30


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture
def ident(clock):
    return make_identity({"secrets": [{"secret": HS_SECRET}], "leeway": "30s"}, clock=clock)


async def verdict(ident, claims: dict | str) -> str:
    tok = hs_token(claims) if isinstance(claims, dict) else token({"alg": "HS256"}, claims)
    try:
        await ident.verify(tok)
        return "ok"
    except TokenError as e:
        return e.reason


@pytest.mark.parametrize(
    ("exp", "expected"),
    [
        (NOW + 1, "ok"),
        (NOW - LEEWAY + 1, "ok"),  # inside the leeway
        (NOW - LEEWAY, "token expired"),  # exactly at the boundary: expired
        (NOW - LEEWAY - 1, "token expired"),
        (0, "token expired"),
        (-1, "token expired"),
    ],
)
async def test_exp_boundaries(ident, exp, expected):
    assert await verdict(ident, {"exp": exp}) == expected


@pytest.mark.parametrize(
    ("nbf", "expected"),
    [
        (NOW, "ok"),
        (NOW + LEEWAY, "ok"),
        (NOW + LEEWAY + 1, "token not yet valid"),
    ],
)
async def test_nbf_boundaries(ident, nbf, expected):
    assert await verdict(ident, {"nbf": nbf}) == expected


@pytest.mark.parametrize(
    ("iat", "expected"),
    [(NOW - 86400, "ok"), (NOW + LEEWAY, "ok"), (NOW + LEEWAY + 1, "token issued in the future")],
)
async def test_iat_in_the_future(ident, iat, expected):
    assert await verdict(ident, {"iat": iat}) == expected


async def test_zero_leeway(clock):
    ident = make_identity({"secrets": [{"secret": HS_SECRET}], "leeway": 0}, clock=clock)
    assert await verdict(ident, {"exp": NOW + 1}) == "ok"
    assert await verdict(ident, {"exp": NOW}) == "token expired"


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "raw",
    ['"1900000000"', "null", "[1900000000]", "{}", "true", "false", "1e400", "-1e400", "1" * 400],
)
async def test_time_claims_must_be_finite_numbers(ident, name, raw):
    reason = await verdict(ident, f'{{"{name}":{raw}}}')
    assert reason != "ok"
    assert name in reason or "payload" in reason  # 1e400 is refused by the JSON parser


@pytest.mark.parametrize("raw", ["Infinity", "-Infinity", "NaN"])
async def test_non_json_constants(ident, raw):
    assert "payload" in await verdict(ident, f'{{"exp":{raw}}}')


async def test_float_times_accepted(ident):
    assert await verdict(ident, {"exp": NOW + 0.5, "nbf": NOW - 0.5, "iat": NOW}) == "ok"


async def test_clock_steps(clock, ident):
    """J29: the wall clock jumps; decisions follow it (no monotonic shortcut for exp)."""
    tok = hs_token({"exp": NOW + 600})
    assert await ident.verify(tok)
    clock.now = NOW + 3600
    with pytest.raises(TokenError, match="expired"):
        await ident.verify(tok)
    clock.now = NOW - 3600  # stepped back: a token with nbf = NOW is not yet valid
    with pytest.raises(TokenError, match="not yet valid"):
        await ident.verify(hs_token({"nbf": NOW}))


@pytest.mark.parametrize(
    ("aud", "expected"),
    [
        ("orders-api", "ok"),
        (["x", "orders-api"], "ok"),
        ("billing", "token audience not accepted"),
        (["billing"], "token audience not accepted"),
        ([], "token audience not accepted"),
        (None, "token has no valid aud"),
        (7, "token has no valid aud"),
        ([7], "token has no valid aud"),
    ],
)
async def test_audience(clock, aud, expected):
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET, "audience": ["orders-api", "admin"]}]}, clock=clock
    )
    claims = {"exp": NOW + 60} if aud is None else {"exp": NOW + 60, "aud": aud}
    assert await verdict(ident, claims) == expected


async def test_required_claims(clock):
    """Row 6: tokens missing exp, iss, aud in turn are refused."""
    ident = make_identity(
        {"secrets": [{"secret": HS_SECRET}], "requireClaims": ["exp", "iss", "aud"]}, clock=clock
    )
    full = {"exp": NOW + 60, "iss": "demo", "aud": "x"}
    assert await verdict(ident, full) == "ok"
    for name in full:
        claims = {k: v for k, v in full.items() if k != name}
        assert await verdict(ident, claims) == f"token lacks required claim {name}"
        assert await verdict(ident, {**claims, name: None}) != "ok"
