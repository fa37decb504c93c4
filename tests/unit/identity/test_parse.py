"""Malformed and hostile tokens are refused (TokenError, never another exception) before any
key is trusted: J1 alg none, J5 stripped signatures, J10 crit/b64, J22 encodings, J23, J24."""

from __future__ import annotations

import time

import pytest

from authz.errors import TokenError
from authz.identity.parse import b64url_decode, parse_payload, parse_token
from tests.unit.identity.support import (
    HS_SECRET,
    HttpServer,
    b64,
    hs_token,
    make_identity,
    segment,
    token,
)

NOW = int(time.time())
CLAIMS = {"id": "u1", "exp": NOW + 600}


@pytest.fixture
def ident():
    return make_identity({"secrets": [{"secret": HS_SECRET, "alg": "HS256"}]})


async def rejected(ident, tok: str, reason: str = "") -> TokenError:
    with pytest.raises(TokenError) as e:
        await ident.verify(tok)
    assert reason in e.value.reason
    return e.value


async def test_valid_token_passes(ident):
    assert (await ident.verify(hs_token(CLAIMS)))["id"] == "u1"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_variants(ident, alg):
    body = segment(CLAIMS)
    for sig in ("", b64(b"x")):
        await rejected(ident, f"{segment({'alg': alg})}.{body}.{sig}")
    # signed with the real secret, header still says none: refused on the header alone
    await rejected(ident, token({"alg": alg}, CLAIMS, HS_SECRET, "HS256"), "alg none")


@pytest.mark.parametrize("header", [{"typ": "JWT"}, {"alg": ""}, {"alg": None}, {"alg": 256}])
async def test_missing_or_bad_alg(ident, header):
    await rejected(ident, token(header, CLAIMS, HS_SECRET, "HS256"))


async def test_signature_stripped(ident):
    good = hs_token(CLAIMS)
    head, body, _sig = good.split(".")
    await rejected(ident, f"{head}.{body}.", "no signature")
    await rejected(ident, f"{head}.{body}", "malformed")
    await rejected(ident, f"{head}.{body}.{b64(b'')}")


async def test_tampered_payload(ident):
    head, _body, sig = hs_token(CLAIMS).split(".")
    forged = segment({**CLAIMS, "id": "admin"})
    await rejected(ident, f"{head}.{forged}.{sig}", "bad signature")


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
async def test_key_locating_headers_never_fetched(name):
    with HttpServer({"keys": []}) as canary:
        ident = make_identity({"secrets": [{"secret": HS_SECRET}]})
        value = {"jwk": {"kty": "oct", "k": b64(HS_SECRET)}, "x5c": ["MIIB"]}.get(name, canary.url)
        tok = hs_token(CLAIMS, **{name: value})
        await rejected(ident, tok, name)
        assert canary.requests == []


@pytest.mark.parametrize(
    "extra",
    [{"crit": ["exp"]}, {"crit": ["b64"], "b64": False}, {"crit": []}, {"b64": False}],
)
async def test_crit_and_unencoded_payload(ident, extra):
    await rejected(ident, hs_token(CLAIMS, **extra))


async def test_b64_true_without_crit_is_harmless(ident):
    assert (await ident.verify(hs_token(CLAIMS, b64=True)))["id"] == "u1"


@pytest.mark.parametrize("extra", [{"enc": "A256GCM"}, {"zip": "DEF"}, {"kid": 7}])
async def test_other_bad_header_members(ident, extra):
    await rejected(ident, hs_token(CLAIMS, **extra))


async def test_header_nested_1000_deep(ident):
    nested = "[" * 1000 + "]" * 1000
    header = '{"alg":"HS256","x":' + nested + "}"
    started = time.perf_counter()
    await rejected(ident, token(header, CLAIMS, HS_SECRET, "HS256"), "header")
    assert time.perf_counter() - started < 1.0  # refused without work, not after a long parse


async def test_payload_nested_deep_is_a_token_error():
    ident = make_identity({"secrets": [{"secret": HS_SECRET}], "maxTokenBytes": 65536})
    payload = '{"id":' + "[" * 20000 + "]" * 20000 + "}"
    await rejected(ident, token({"alg": "HS256"}, payload, HS_SECRET, "HS256"), "payload")


@pytest.mark.parametrize(
    "header",
    ['{"alg":"HS256","alg":"none"}', '{"alg":"HS256","kid":"a","kid":"b"}'],
)
async def test_duplicate_header_members(ident, header):
    await rejected(ident, token(header, CLAIMS, HS_SECRET, "HS256"), "duplicate")


async def test_duplicate_claims(ident):
    payload = f'{{"id":"u1","exp":{NOW + 600},"id":"admin"}}'
    await rejected(ident, token({"alg": "HS256"}, payload, HS_SECRET, "HS256"), "duplicate")


@pytest.mark.parametrize("header", ["[]", '"HS256"', "null", "1", "not json", "\xff"])
async def test_header_not_an_object(ident, header):
    raw = header.encode("latin-1")
    await rejected(ident, f"{b64(raw)}.{segment(CLAIMS)}.{b64(b'sig')}")


@pytest.mark.parametrize("payload", ["[]", '"x"', "null", "not json", '{"a":NaN}', b"\xff\xfe"])
async def test_payload_not_an_object(ident, payload):
    await rejected(ident, token({"alg": "HS256"}, payload, HS_SECRET, "HS256"), "payload")


async def test_100_kib_token_refused_before_decoding(ident, monkeypatch):
    import authz.identity.parse as parse

    calls = []
    monkeypatch.setattr(parse, "b64url_decode", lambda s: calls.append(s))
    await rejected(ident, "a" * 100 * 1024, "too large")
    big = hs_token({**CLAIMS, "pad": "x" * 100 * 1024})
    await rejected(ident, big, "too large")
    assert calls == []


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h, p, s: f"{h}=.{p}.{s}",  # padding
        lambda h, p, s: f"{h}.{p}.{s}==",
        lambda h, p, s: f"{h}.{p}.{s[:-1]}{'B' if s[-1] == 'A' else 'A'}",  # trailing bits
        lambda h, p, s: f"{h.replace('-', '+')}.{p}.{s.replace('_', '/')}x",  # std alphabet
        lambda h, p, s: f" {h}.{p}.{s}",
        lambda h, p, s: f"{h}.{p}.{s}.x.y",  # five parts (JWE shape)
        lambda h, p, s: f"{h}.{p}.{s}é",
    ],
)
async def test_non_canonical_encodings(ident, mangle):
    h, p, s = hs_token(CLAIMS).split(".")
    await rejected(ident, mangle(h, p, s))


async def test_non_canonical_trailing_bits_rejected_even_if_signature_matches(ident):
    # same header bytes, different text: the token is not the one that was signed
    h, p, s = hs_token(CLAIMS).split(".")
    last = s[-1]
    alt = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variant = next(
        c
        for c in alt
        if c != last and b64url_decode_lenient(s[:-1] + c) == b64url_decode_lenient(s)
    )
    await rejected(ident, f"{h}.{p}.{s[:-1]}{variant}", "signature")


def b64url_decode_lenient(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_parse_token_keeps_payload_encoded():
    tok = hs_token(CLAIMS, kid="k1")
    parsed = parse_token(tok, 8192)
    assert parsed.alg == "HS256" and parsed.kid == "k1"
    assert parse_payload(parsed.payload_segment) == CLAIMS


def test_b64url_decode_canonical_only():
    assert b64url_decode(b64(b"hello")) == b"hello"
    for bad in ("aGVsbG8=", "aGVsbG9", "aGVs+G8", "a"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


def parse_error(tok: str, max_bytes: int = 8192) -> TokenError:
    with pytest.raises(TokenError) as e:
        parse_token(tok, max_bytes)
    return e.value


HEAD, BODY, SIG = segment({"alg": "HS256"}), segment(CLAIMS), b64(b"sig")


def with_header(header: dict | str) -> str:
    return f"{segment(header)}.{BODY}.{SIG}"


@pytest.mark.parametrize(
    ("tok", "reason"),
    [
        (with_header({"typ": "JWT"}), "token header has no alg"),
        (with_header({"alg": ""}), "token header has no alg"),
        (with_header({"alg": 7}), "token header has no alg"),
        (with_header({"alg": "None"}), "unsigned token (alg none)"),
        (with_header({"alg": "HS256", "x5u": "u"}), "token header member 'x5u' is not accepted"),
        (with_header({"alg": "HS256", "crit": []}),
         "token header has crit extensions we do not understand"),
        (with_header({"alg": "HS256", "b64": False}), "unencoded payload (b64) is not accepted"),
        (with_header({"alg": "HS256", "enc": "A256GCM"}), "encrypted tokens are not accepted"),
        (with_header({"alg": "HS256", "zip": "DEF"}), "encrypted tokens are not accepted"),
        (with_header({"alg": "HS256", "kid": 7}), "token kid is not a string"),
        (with_header("[]"), "token header is not a JSON object"),
        (f"{HEAD}.{BODY}", "malformed token (expected header.payload.signature)"),
        (f"{HEAD}.{BODY}.", "token has no signature"),
        (f"{HEAD}..{SIG}", "token has no payload"),
        (f"{HEAD}.{BODY}.{SIG}=", "malformed token signature"),
        (f"{HEAD}.{BODY}.{SIG}é", "malformed token"),
        (f"{b64(b'{')}.{BODY}.{SIG}", "malformed token header: "),
    ],
)  # fmt: skip
def test_refusal_reasons(tok, reason):
    # reasons reach the decision log and --explain: each refusal names its own cause
    err = parse_error(tok)
    assert err.reason == reason if not reason.endswith(": ") else err.reason.startswith(reason)
    assert err.kind == "malformed"


def test_token_of_exactly_max_bytes_is_parsed():
    tok = hs_token(CLAIMS)
    assert parse_token(tok, len(tok)).alg == "HS256"
    err = parse_error(tok, len(tok) - 1)
    assert (err.reason, err.kind) == ("token too large", "too_large")


def test_header_brackets_limit_is_eight():
    # one object plus seven nested lists is 8 brackets: parsed; one list more is refused
    assert parse_token(with_header('{"alg":"HS256","x":' + "[" * 7 + "]" * 7 + "}"), 8192)
    err = parse_error(with_header('{"alg":"HS256","x":' + "[" * 8 + "]" * 8 + "}"))
    assert err.reason == "malformed token header: too complex"
    # so is a header of nine flat objects' worth of brackets, nested or not
    assert parse_error(with_header('{"alg":"HS256","x":[{},{},{},{},{},{},{},{}]}'))


def test_the_bracket_limit_is_for_the_header_only():
    payload = {"id": [[[[[[[[[["deep"]]]]]]]]]], "n": [{}, {}, {}, {}, {}, {}, {}, {}, {}]}
    assert parse_payload(segment(payload)) == payload


@pytest.mark.parametrize("n", range(12))
def test_b64url_round_trip_of_every_length(n):
    data = bytes(range(200, 200 + n))
    assert b64url_decode(b64(data)) == data


def test_b64url_decode_refusal_messages():
    with pytest.raises(ValueError, match=r"^not base64url$"):
        b64url_decode("aGVsbG8x5")  # 9 characters: no base64 text has length 1 mod 4
    with pytest.raises(ValueError, match=r"^non-canonical base64url$"):
        b64url_decode("aGVsbG9")  # the last character carries bits that are not zero
