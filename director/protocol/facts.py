"""A node's facts as it reports them at HELLO: typed, bounded, every one optional.

Facts are data from a node: shown (sanitised), matched by ``--target fact:K=V`` as
strings, and seen by templates as ``facts.NAME`` -- never interpreted.  An agent
older than facts sends none (``Hello.facts`` is None); a newer one may add keys,
which are ignored.  Pure; no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar

from director.protocol import fields as F

MAX_HOSTNAME = 253
MAX_OS_PART = 64
MAX_KERNEL = 128
MAX_ARCH = 32
MAX_VERSION = 64
MAX_ADDRESSES = 64
MAX_ADDRESS = 64          # an IPv6 address with a zone id fits
MAX_CPUS = 1_000_000
MAX_MEMORY = F.MAX_COUNT  # bytes


@dataclass(frozen=True)
class Facts:
    hostname: str | None = None
    os_id: str | None = None
    os_version: str | None = None
    kernel: str | None = None
    arch: str | None = None
    cpus: int | None = None
    memory: int | None = None
    addresses: tuple[str, ...] = ()
    version: str | None = None

    TEXTS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("hostname", MAX_HOSTNAME), ("kernel", MAX_KERNEL), ("arch", MAX_ARCH),
        ("version", MAX_VERSION))

    def to_dict(self) -> dict[str, Any]:
        """The wire form, and the document ``node NAME --json`` shows: absent facts are
        left out; ``os`` is ``{"id", "version"}``."""
        out: dict[str, Any] = {}
        for name in ("hostname", "kernel", "arch", "cpus", "memory", "version"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.os_id is not None or self.os_version is not None:
            out["os"] = {k: v for k, v in (("id", self.os_id), ("version", self.os_version))
                         if v is not None}
        if self.addresses:
            out["addresses"] = list(self.addresses)
        return out

    @classmethod
    def from_body(cls, mtype: str, raw: dict) -> Facts:
        """Decode a peer's ``facts`` object; ProtocolError names the broken fact."""
        t = f"{mtype}.facts"
        texts = {name: F.text(t, raw, name, cap, ident=True, null=True)
                 for name, cap in cls.TEXTS}
        os_raw = F.mapping(t, raw, "os", null=True)
        os_id = os_version = None
        if os_raw is not None:
            o = f"{t}.os"
            os_id = F.text(o, os_raw, "id", MAX_OS_PART, ident=True, null=True)
            os_version = F.text(o, os_raw, "version", MAX_OS_PART, ident=True, null=True)
        addresses: tuple[str, ...] = ()
        if raw.get("addresses") is not None:
            items = F.array(t, raw, "addresses", MAX_ADDRESSES)
            addresses = tuple(_address(t, item) for item in items)
        return cls(texts["hostname"], os_id, os_version, texts["kernel"], texts["arch"],
                   F.integer(t, raw, "cpus", 1, MAX_CPUS, null=True),
                   F.integer(t, raw, "memory", 0, MAX_MEMORY, null=True),
                   addresses, texts["version"])


def _address(mtype: str, item: Any) -> str:
    if item.__class__ is not str or len(item) > MAX_ADDRESS:
        raise F.fail(mtype, "addresses", f"must hold IP addresses of at most {MAX_ADDRESS}"
                     " characters")
    try:
        ipaddress.ip_address(item)
    except ValueError:
        raise F.fail(mtype, "addresses", "must hold IP addresses") from None
    return item

