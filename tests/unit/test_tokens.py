"""Join tokens and public-key text forms (director.trust.tokens / keyfmt)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.errors import ConfigError, KeyFileError, TokenError
from director.trust import keyfmt
from director.trust.keyfmt import (
    b64_to_key,
    fingerprint,
    key_to_b64,
    key_to_z85,
    parse_public_key,
    z85_decode,
    z85_encode,
    z85_to_key,
)
from director.trust.tokens import (
    MAX_TTL,
    JoinToken,
    TokenRecord,
    check,
    hash_secret,
    new_token,
    parse_ttl,
    validate_token_id,
)

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
KEY = bytes(range(32))
NOW = 1_700_000_000.0


# -- key formats ---------------------------------------------------------------


def test_z85_matches_the_zeromq_spec_vector() -> None:
    raw = bytes.fromhex("864FD26FB559F75B")
    assert z85_encode(raw) == "HelloWorld"
    assert z85_decode("HelloWorld") == raw


def test_z85_matches_pyzmq_for_a_curve_key() -> None:
    zmq_z85 = pytest.importorskip("zmq.utils.z85")
    raw = os.urandom(32)
    assert key_to_z85(raw) == zmq_z85.encode(raw).decode("ascii")
    assert z85_to_key(zmq_z85.encode(raw).decode("ascii")) == raw


def test_z85_key_round_trip_and_length() -> None:
    text = key_to_z85(KEY)
    assert len(text) == 40
    assert z85_to_key(text) == KEY
    assert z85_to_key(f"  {text}\n") == KEY


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("abc", "40 characters"), ("~" * 40, "Z85"), ("#" * 40, "out of range"), ("x" * 41, "40")],
)
def test_z85_to_key_rejects_malformed(text: str, fragment: str) -> None:
    with pytest.raises(KeyFileError, match=fragment):
        z85_to_key(text)


def test_raw_key_must_be_32_bytes() -> None:
    with pytest.raises(KeyFileError, match="32 raw bytes"):
        key_to_z85(b"short")
    with pytest.raises(KeyFileError):
        fingerprint(b"x" * 31)


def test_b64_key_round_trip_is_shell_safe() -> None:
    raw = os.urandom(32)
    text = key_to_b64(raw)
    assert len(text) == 43 and SAFE.match(text)
    assert b64_to_key(text) == raw


def test_b64_rejects_non_canonical_encoding() -> None:
    text = key_to_b64(KEY)
    last = keyfmt_alphabet_neighbour(text[-1])
    with pytest.raises(KeyFileError):
        b64_to_key(text[:-1] + last)


def keyfmt_alphabet_neighbour(ch: str) -> str:
    """A character that differs only in the 2 unused low bits of the last sextet."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return alphabet[alphabet.index(ch) ^ 1]


def test_parse_public_key_accepts_z85_b64_and_hex() -> None:
    raw = os.urandom(32)
    assert parse_public_key(key_to_z85(raw)) == raw
    assert parse_public_key(key_to_b64(raw)) == raw
    assert parse_public_key(raw.hex()) == raw
    with pytest.raises(KeyFileError, match="not a public key"):
        parse_public_key("nope")


def test_fingerprint_shape_and_definition() -> None:
    fp = fingerprint(KEY)
    assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", fp)
    import base64

    digest = hashlib.blake2b(KEY, digest_size=32).digest()[:10]
    assert fp.replace("-", "") == base64.b32encode(digest).decode().lower()
    assert fingerprint(bytes(32)) != fp


def test_keyfmt_has_no_zmq_dependency() -> None:
    source = open(keyfmt.__file__, encoding="utf-8").read()
    assert "import zmq" not in source and "from zmq" not in source


# -- tokens --------------------------------------------------------------------


def test_token_round_trip_and_shell_safe() -> None:
    token = new_token(KEY)
    text = token.encode()
    assert SAFE.match(text)
    assert text.startswith("dj1.")
    assert JoinToken.decode(text) == token
    assert JoinToken.decode(f" {text}\n") == token
    assert token.server_key == KEY


def test_new_tokens_are_unique_and_well_formed() -> None:
    a, b = new_token(KEY), new_token(KEY)
    assert a.secret != b.secret and a.token_id != b.token_id
    assert re.fullmatch(r"[a-z2-7]{8}", a.token_id)
    assert len(a.secret) == 43


def test_repr_does_not_leak_the_secret() -> None:
    token = new_token(KEY)
    assert token.secret not in repr(token)
    assert token.token_id in repr(token)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda t: "", "empty"),
        (lambda t: t.replace("dj1", "dj2", 1), "must start with 'dj1.'"),
        (lambda t: t + ".extra", "4 parts"),
        (lambda t: t.rsplit(".", 1)[0], "4 parts"),
        (lambda t: t + "!", "may only contain"),
        (lambda t: ".".join(p[:-1] if i == 1 else p for i, p in enumerate(t.split("."))), "server key"),
        (lambda t: ".".join(p if i != 2 else "ABCDEFGH" for i, p in enumerate(t.split("."))), "token id"),
        (lambda t: t[:-5], "secret part"),
    ],
)
def test_decode_errors_are_clear_and_hide_the_secret(mutate, fragment: str) -> None:
    token = new_token(KEY)
    with pytest.raises(TokenError) as info:
        JoinToken.decode(mutate(token.encode()))
    assert fragment in str(info.value)
    assert token.secret not in str(info.value)
    assert token.secret[:-5] not in str(info.value)


@settings(max_examples=300)
@given(st.text())
def test_decode_arbitrary_text_only_raises_token_error(text: str) -> None:
    try:
        token = JoinToken.decode(text)
    except TokenError:
        return
    assert token.encode() == text.strip()


@settings(max_examples=200)
@given(st.lists(st.text(alphabet="ABCxyz019._-", max_size=50), min_size=4, max_size=4))
def test_decode_near_miss_tokens_only_raise_token_error(parts: list[str]) -> None:
    text = "dj1." + ".".join(parts[1:]) + parts[0]
    try:
        token = JoinToken.decode(text)
    except TokenError as exc:
        assert str(exc)
        return
    assert token.encode() == text


def test_hash_secret_is_personalised_blake2b_and_not_the_secret() -> None:
    secret = new_token(KEY).secret
    digest = hash_secret(secret)
    assert digest != secret and secret not in digest
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_secret(secret)
    assert digest != hashlib.blake2b(secret.encode(), digest_size=32).hexdigest()
    assert hash_secret(secret + "x") != digest


def _record(token: JoinToken, **changes) -> TokenRecord:
    record = TokenRecord(token.token_id, hash_secret(token.secret), created=NOW,
                         expires=NOW + 3600, uses_left=1)
    return dataclasses.replace(record, **changes)


def test_check_accepts_a_good_token() -> None:
    token = new_token(KEY)
    rec = _record(token)
    assert rec.secret_hash == hash_secret(token.secret) and rec.expires == NOW + 3600
    check(rec, token, NOW + 10)  # does not raise


@pytest.mark.parametrize(
    ("changes", "now", "fragment"),
    [
        ({"revoked": True}, NOW, "revoked"),
        ({}, NOW + 3600, "expired"),
        ({}, NOW + 99999, "expired"),
        ({"uses_left": 0}, NOW, "used up"),
        ({"secret_hash": hash_secret("other")}, NOW, "wrong secret"),
    ],
)
def test_check_refusals_are_distinct(changes: dict, now: float, fragment: str) -> None:
    token = new_token(KEY)
    with pytest.raises(TokenError) as info:
        check(_record(token, **changes), token, now)
    message = str(info.value)
    assert fragment in message
    assert token.token_id in message
    assert token.secret not in message


def test_check_unknown_token() -> None:
    token = new_token(KEY)
    with pytest.raises(TokenError, match="unknown join token"):
        check(None, token, NOW)
    other = new_token(KEY)
    with pytest.raises(TokenError, match="unknown join token"):
        check(_record(other), token, NOW)


def test_wrong_secret_is_reported_before_the_records_state() -> None:
    token = new_token(KEY)
    forged = dataclasses.replace(token, secret=new_token(KEY).secret)
    with pytest.raises(TokenError, match="wrong secret"):
        check(_record(token, revoked=True, uses_left=0), forged, NOW + 1e9)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("30m", 1800), ("45s", 45), ("2d", 172800), ("90", 90), ("1h30m", 5400),
     (" 1.5H ", 5400), ("30d", MAX_TTL), (120, 120)],
)
def test_parse_ttl(text, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1w", "-5", "0", "0s", "31d", "1h-", "h", "1 h x", True, None])
def test_parse_ttl_rejects(text) -> None:
    with pytest.raises(ConfigError):
        parse_ttl(text)


def test_validate_token_id() -> None:
    assert validate_token_id(" ABCDEFG2 ") == "abcdefg2"
    with pytest.raises(TokenError, match="invalid token id"):
        validate_token_id("abc")
