"""Text forms of 32-byte Curve25519 public keys: Z85, base64url, fingerprints.

Pure functions (no zmq import): ZeroMQ CURVE uses Z85 text keys, join tokens need a
shell-safe form (base64url), and operators compare short fingerprints by eye.
Python 3.11 has no ``base64.z85encode``, so Z85 (ZeroMQ RFC 32) is implemented here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from director.errors import KeyFileError

KEY_BYTES = 32
Z85_KEY_CHARS = 40
B64_KEY_CHARS = 43

Z85_ALPHABET = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_INDEX = {ch: i for i, ch in enumerate(Z85_ALPHABET)}
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_HEX_RE = re.compile(r"[0-9A-Fa-f]{64}")

__all__ = [
    "KEY_BYTES",
    "Z85_ALPHABET",
    "z85_encode",
    "z85_decode",
    "key_to_z85",
    "z85_to_key",
    "key_to_b64",
    "b64_to_key",
    "parse_public_key",
    "fingerprint",
]


def z85_encode(data: bytes) -> str:
    """Encode bytes (length a multiple of 4) as ZeroMQ Z85 text."""
    if len(data) % 4:
        raise ValueError(f"Z85 input length must be a multiple of 4, got {len(data)}")
    out: list[str] = []
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i : i + 4], "big")
        chunk = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            chunk.append(Z85_ALPHABET[digit])
        out.extend(reversed(chunk))
    return "".join(out)


def z85_decode(text: str) -> bytes:
    """Decode Z85 text (length a multiple of 5); ValueError on anything invalid."""
    if len(text) % 5:
        raise ValueError(f"Z85 text length must be a multiple of 5, got {len(text)}")
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for ch in text[i : i + 5]:
            digit = _Z85_INDEX.get(ch)
            if digit is None:
                raise ValueError(f"character {ch!r} is not in the Z85 alphabet")
            value = value * 85 + digit
        if value >= 1 << 32:
            raise ValueError("Z85 group out of range")
        out += value.to_bytes(4, "big")
    return bytes(out)


def _check_raw(raw: bytes) -> bytes:
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != KEY_BYTES:
        size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
        raise KeyFileError(f"a public key must be {KEY_BYTES} raw bytes, got {size}")
    return bytes(raw)


def key_to_z85(raw: bytes) -> str:
    """The 40-character Z85 form ZeroMQ CURVE and ``--server-key`` use."""
    return z85_encode(_check_raw(raw))


def z85_to_key(text: str) -> bytes:
    """Parse a 40-character Z85 key into 32 raw bytes (KeyFileError if malformed)."""
    if not isinstance(text, str):
        raise KeyFileError("a Z85 key must be text")
    text = text.strip()
    if len(text) != Z85_KEY_CHARS:
        raise KeyFileError(
            f"a Z85 public key is {Z85_KEY_CHARS} characters, got {len(text)}"
        )
    try:
        return z85_decode(text)
    except ValueError as exc:
        raise KeyFileError(f"not a valid Z85 public key: {exc}") from None


def key_to_b64(raw: bytes) -> str:
    """43-character base64url (no padding): the shell-safe form used in join tokens."""
    return base64.urlsafe_b64encode(_check_raw(raw)).rstrip(b"=").decode("ascii")


def b64_to_key(text: str) -> bytes:
    """Parse a canonical 43-character base64url key (no padding) into 32 raw bytes."""
    if not isinstance(text, str) or len(text) != B64_KEY_CHARS or not _B64URL_RE.fullmatch(text):
        raise KeyFileError(
            f"a base64url public key is {B64_KEY_CHARS} characters of A-Z a-z 0-9 _ -"
        )
    raw = base64.urlsafe_b64decode(text + "=")
    if key_to_b64(raw) != text:  # reject non-canonical trailing bits
        raise KeyFileError("not a canonical base64url public key")
    return raw


def parse_public_key(text: str) -> bytes:
    """Accept a public key as Z85 (40), base64url (43, or 44 with '=') or hex (64)."""
    if not isinstance(text, str):
        raise KeyFileError("a public key must be text")
    text = text.strip()
    if len(text) == Z85_KEY_CHARS:
        return z85_to_key(text)
    if len(text) == B64_KEY_CHARS + 1 and text.endswith("="):
        text = text[:-1]
    if len(text) == B64_KEY_CHARS:
        return b64_to_key(text.replace("+", "-").replace("/", "_"))
    if _HEX_RE.fullmatch(text):
        try:
            return binascii.unhexlify(text)
        except binascii.Error:  # pragma: no cover - regex already checked
            pass
    raise KeyFileError(
        f"not a public key: expected {Z85_KEY_CHARS} Z85 characters "
        f"(as printed by 'director keys server'), got {len(text)} characters"
    )


def fingerprint(raw_public_key: bytes) -> str:
    """Short readable digest for eye comparison, e.g. ``abcd-efgh-ijkl-mnop``.

    BLAKE2b-256 of the key, first 10 bytes (80 bits), base32 lower case, in groups of 4.
    """
    digest = hashlib.blake2b(_check_raw(raw_public_key), digest_size=32).digest()
    text = base64.b32encode(digest[:10]).decode("ascii").lower()
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))
