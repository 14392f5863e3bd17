"""What the server core is fed (events) and what it asks its driver to do (actions).

Plain values, so a test can drive the core with a list of events and read the
list of actions back, with no sockets, threads or clock in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


# -- events ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FromNode:
    """Frames from a node's connection; ``key`` is the ZAP User-Id (authenticated)."""

    route: bytes
    key: str
    address: str | None
    frames: list


@dataclass(frozen=True, slots=True)
class Request:
    """Frames of an operator request on the control socket, from requester ``rid``."""

    rid: bytes
    frames: list


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes: expiry, overdue jobs, flushing state, progress."""


@dataclass(frozen=True, slots=True)
class ManifestsBuilt:
    """The driver finished building COPY manifests for submission ``ticket``."""

    ticket: int
    built: dict | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A send to ``key`` failed (peer gone or its queue full); ``jobs`` were in it."""

    key: str
    jobs: tuple[str, ...]


# -- actions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    """Send frames on the node socket to ``route`` (``key``/``jobs``: see Undelivered)."""

    route: bytes
    frames: list
    key: str = ""
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """Send frames on the control socket to requester ``rid``."""

    rid: bytes
    frames: list


@dataclass(frozen=True, slots=True)
class BuildManifests:
    """Hash COPY sources off the loop (it reads files), then feed ManifestsBuilt."""

    ticket: int
    base: Any
    copies: list = field(default_factory=list)   # [((step, job), Instruction)]


@dataclass(frozen=True, slots=True)
class ServeChunk:
    """Read one chunk of a manifest's file and send it (CHUNK, or CHUNK_ERR on failure).

    The core decided the node may have it; the driver only reads and sends."""

    route: bytes
    job_id: str
    file: int
    chunk: int
    path: Path
    entry: Any
    chunk_size: int
    vouched: Any
