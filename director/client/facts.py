"""This node's facts, gathered once when the agent starts (stdlib only, no subprocess).

Each fact is read on its own; one that cannot be read, or would not pass the
protocol's bounds (``director.protocol.facts``), is simply absent: facts never
stop an agent from serving.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import platform
import socket
from pathlib import Path
from typing import Any, Callable

from director import __version__
from director.errors import ProtocolError
from director.protocol.facts import MAX_ADDRESSES, Facts

log = logging.getLogger("director.client")
OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
MAX_READ = 64 * 1024      # bytes read from any one /proc or /etc file


def collect(version: str = __version__) -> Facts:
    """Every fact this node can tell (a missing one is left out)."""
    raw: dict[str, Any] = {"version": version}
    readers: dict[str, Callable[[], Any]] = {
        "hostname": socket.gethostname, "os": os_release, "kernel": platform.release,
        "arch": platform.machine, "cpus": os.cpu_count, "memory": memory,
        "addresses": addresses}
    for name, read in readers.items():
        try:
            value = read()
        except Exception as exc:  # noqa: BLE001 - a fact that cannot be read is absent
            log.debug("fact %s not available: %s", name, exc)
            continue
        if value in (None, "", [], {}):
            continue
        try:
            Facts.from_body("facts", {name: value})
        except ProtocolError as exc:
            log.debug("fact %s left out: %s", name, exc)
            continue
        raw[name] = value
    try:
        return Facts.from_body("facts", raw)
    except ProtocolError:  # every fact passed on its own; never expected
        return Facts(version=version)


def _read(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(MAX_READ).decode("utf-8", "replace")


def os_release() -> dict[str, str] | None:
    """ID and VERSION_ID from os-release (VERSION_ID may be absent: rolling releases)."""
    for path in OS_RELEASE:
        try:
            text = _read(path)
        except OSError:
            continue
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("ID", "VERSION_ID"):
                values[key.strip()] = value.strip().strip("\"'")
        out = {k: values[v] for k, v in (("id", "ID"), ("version", "VERSION_ID"))
               if values.get(v)}
        return out or None
    return None


def memory() -> int | None:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * size if pages > 0 and size > 0 else None


def addresses() -> list[str]:
    """The node's own IP addresses but loopback: from /proc (Linux), else what its
    host name resolves to."""
    found: list[str] = []
    for reader in (_proc_ipv4, _proc_ipv6):
        try:
            found += reader()
        except (OSError, ValueError):
            continue
    if not found:
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None)
            found = [str(info[4][0]) for info in infos]
        except OSError:
            found = []
    out: list[str] = []
    for text in found:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not ip.is_loopback and str(ip) not in out:
            out.append(str(ip))
    return out[:MAX_ADDRESSES]


def _proc_ipv4() -> list[str]:
    """Local host entries of the kernel's routing trie: each ``|-- ADDR`` line followed
    by ``/32 host LOCAL``."""
    out, last = [], None
    for line in _read(Path("/proc/net/fib_trie")).splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "|--":
            last = words[1]
        elif last is not None and words[-2:] == ["host", "LOCAL"]:
            out.append(last)
    return out


def _proc_ipv6() -> list[str]:
    out = []
    for line in _read(Path("/proc/net/if_inet6")).splitlines():
        words = line.split()
        if words and len(words[0]) == 32:
            out.append(str(ipaddress.IPv6Address(int(words[0], 16))))
    return out
