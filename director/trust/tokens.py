"""Join tokens: one shell-safe string that lets a new node enroll without an operator.

A token carries the server's public key (so the client can pin it before it ever
connects), a public token id (so the server can find, list and revoke it) and a random
secret (proof of possession).  The server stores only a keyed BLAKE2b hash of the secret.
Pure code: no database, no network; the server keeps the records itself.

Format: ``dj1.<server key, base64url>.<token id, 8 x base32>.<secret, base64url>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass, field

from director.errors import ConfigError, KeyFileError, TokenError
from director.trust.keyfmt import b64_to_key, key_to_b64

TOKEN_VERSION = "dj1"
SECRET_BYTES = 32
MAX_TTL = 30 * 86400.0
DEFAULT_TTL = 3600.0

TOKEN_RE = re.compile(r"[A-Za-z0-9._-]+")
TOKEN_ID_RE = re.compile(r"[a-z2-7]{8}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_TTL_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_TTL_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HASH_PERSON = b"director-token"

__all__ = [
    "TOKEN_VERSION",
    "MAX_TTL",
    "DEFAULT_TTL",
    "TOKEN_RE",
    "TOKEN_ID_RE",
    "JoinToken",
    "TokenRecord",
    "new_token",
    "hash_secret",
    "check",
    "parse_ttl",
    "validate_token_id",
]


@dataclass(frozen=True)
class JoinToken:
    """A decoded join token; ``secret`` is kept out of repr() so it never lands in logs."""

    server_key: bytes
    token_id: str
    secret: str = field(repr=False)

    def encode(self) -> str:
        """The one-line, shell-safe text form (characters ``A-Za-z0-9._-`` only)."""
        return ".".join((TOKEN_VERSION, key_to_b64(self.server_key), self.token_id, self.secret))

    @classmethod
    def decode(cls, text: str) -> JoinToken:
        """Parse a token; TokenError (never echoing the secret) on anything malformed."""
        if not isinstance(text, str):
            raise TokenError("a join token must be text")
        text = text.strip()
        if not text:
            raise TokenError("the join token is empty")
        if not TOKEN_RE.fullmatch(text):
            raise TokenError(
                "malformed join token: it may only contain A-Z a-z 0-9 '.' '_' '-' "
                "(was it cut or wrapped when copied?)"
            )
        parts = text.split(".")
        if parts[0] != TOKEN_VERSION:
            raise TokenError(
                f"not a Director join token: it must start with '{TOKEN_VERSION}.' "
                "(create one with 'director token create')"
            )
        if len(parts) != 4:
            raise TokenError(
                f"malformed join token: expected 4 parts separated by '.', got {len(parts)}"
            )
        _, key_text, token_id, secret = parts
        try:
            server_key = b64_to_key(key_text)
        except KeyFileError:
            raise TokenError("malformed join token: the server key part is invalid") from None
        if not TOKEN_ID_RE.fullmatch(token_id):
            raise TokenError("malformed join token: the token id part is invalid")
        if not _SECRET_RE.fullmatch(secret) or _b64_roundtrip(secret) != secret:
            raise TokenError("malformed join token: the secret part is invalid")
        return cls(server_key=server_key, token_id=token_id, secret=secret)


def _b64_roundtrip(text: str) -> str:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_token(server_key: bytes) -> JoinToken:
    """A fresh token for this server key, with a random id and a 256-bit secret."""
    key_to_b64(server_key)  # validates length
    token_id = base64.b32encode(secrets.token_bytes(5)).decode("ascii").lower()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return JoinToken(server_key=bytes(server_key), token_id=token_id, secret=secret)


def hash_secret(secret: str) -> str:
    """Hex BLAKE2b-256 of the secret (personalised): all the server ever stores."""
    return hashlib.blake2b(
        secret.encode("utf-8"), digest_size=32, person=_HASH_PERSON
    ).hexdigest()


def validate_token_id(token_id: str) -> str:
    """Normalise an operator-typed token id (``token revoke ID``); TokenError if invalid."""
    normal = token_id.strip().lower() if isinstance(token_id, str) else ""
    if not TOKEN_ID_RE.fullmatch(normal):
        raise TokenError(
            f"invalid token id {token_id!r}: expected 8 characters of a-z 2-7 "
            "(see 'director token list')"
        )
    return normal


@dataclass(frozen=True)
class TokenRecord:
    """What the server keeps about one token (never the secret itself)."""

    token_id: str
    secret_hash: str
    created: float
    expires: float
    uses_left: int
    revoked: bool = False


def check(record: TokenRecord | None, token: JoinToken, now: float) -> None:
    """Raise TokenError unless ``token`` may enroll a node now.

    The secret is checked before the record's state is revealed, so someone who only
    knows a token id learns nothing about it.
    """
    if record is None or record.token_id != token.token_id:
        raise TokenError(
            f"unknown join token {token.token_id}: create a new one with 'director token create'"
        )
    if not hmac.compare_digest(hash_secret(token.secret), record.secret_hash):
        raise TokenError(f"join token {token.token_id} is not valid: wrong secret")
    if record.revoked:
        raise TokenError(f"join token {token.token_id} has been revoked")
    if now >= record.expires:
        raise TokenError(
            f"join token {token.token_id} has expired: create a new one with "
            "'director token create'"
        )
    if record.uses_left <= 0:
        raise TokenError(f"join token {token.token_id} has already been used up")


def parse_ttl(text: str | float | int) -> float:
    """Parse a lifetime such as ``90``, ``45s``, ``30m``, ``1h``, ``2d`` or ``1h30m``."""
    if isinstance(text, bool):
        raise ConfigError(f"invalid TTL {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    elif isinstance(text, str):
        spec = text.strip().lower()
        pos, seconds, seen = 0, 0.0, False
        while pos < len(spec):
            match = _TTL_PART_RE.match(spec, pos)
            if match is None or (not match.group(2) and match.end() != len(spec)):
                raise ConfigError(
                    f"invalid TTL {text!r}: use seconds or a number with s, m, h or d "
                    "(e.g. 90, 45s, 30m, 1h, 2d)"
                )
            seconds += float(match.group(1)) * _TTL_UNITS[match.group(2)]
            pos, seen = match.end(), True
        if not seen:
            raise ConfigError("invalid TTL '': give e.g. 1h")
    else:
        raise ConfigError(f"invalid TTL of type {type(text).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"invalid TTL {text!r}: it must be positive")
    if seconds > MAX_TTL:
        raise ConfigError(f"TTL {text!r} is too long: at most 30 days (30d)")
    return seconds
