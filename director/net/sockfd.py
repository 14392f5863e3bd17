"""Looking at (and cutting) libzmq's TCP connections by their file descriptor.

libzmq owns these descriptors; the socket monitor tells us their numbers.  We
only ever touch a duplicate, and before cutting we check that the number still
names the same peer (ip, port), so a number reused by a newer connection or a
file is left alone.  ``shutdown`` on the duplicate ends the shared connection:
libzmq reads EOF, closes its descriptor and drops what it buffered for it.
"""

from __future__ import annotations

import os
import socket

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _borrowed(fd: int) -> socket.socket | None:
    """A socket object over a duplicate of ``fd`` (close it), or None."""
    try:
        dup = os.dup(fd)
    except OSError:
        return None
    try:
        return socket.socket(fileno=dup)
    except (OSError, ValueError):
        os.close(dup)
        return None


def peer_of(fd: int) -> tuple[str, int] | None:
    """(ip, port) of the TCP connection on ``fd``, or None if it is not one (any more)."""
    sock = _borrowed(fd)
    if sock is None:
        return None
    with sock:
        try:
            name = sock.getpeername()
        except OSError:
            return None
    if not isinstance(name, tuple) or len(name) < 2:
        return None
    return str(name[0]), int(name[1])


def cut(fd: int, peer: tuple[str, int]) -> bool:
    """End the connection on ``fd`` if it still is the one to ``peer``."""
    sock = _borrowed(fd)
    if sock is None:
        return False
    with sock:
        try:
            if tuple(sock.getpeername()[:2]) != peer:
                return False
            sock.shutdown(socket.SHUT_RDWR)
            return True
        except OSError:
            return False


class ResidentSize:
    """This process's resident memory in bytes, read cheaply and often (Linux);
    0 where /proc is missing (the memory budget then never triggers)."""

    def __init__(self) -> None:
        try:
            self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._fd = -1

    def __call__(self) -> int:
        if self._fd < 0:
            return 0
        try:
            return int(os.pread(self._fd, 128, 0).split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_files() -> int | None:
    """How many descriptors this process has open (Linux), or None."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None
