"""The DirectorError tree.

Library code raises these; only ``director.cli`` maps them to exit codes and
one-line messages.  Messages never contain secret material.
"""

from __future__ import annotations


class DirectorError(Exception):
    """Base of every error Director raises on purpose."""

    exit_code = 1


class ConfigError(DirectorError):
    """A configuration file, environment variable or option is wrong."""


class KeyFileError(DirectorError):
    """A key file is missing, malformed or unsafe (permissions, owner, symlink)."""


class TokenError(DirectorError):
    """A join token is malformed, unknown, expired or used up."""


class NameError_(DirectorError):
    """A node name is not valid."""


class ProtocolError(DirectorError):
    """A message could not be decoded or is not allowed (the peer's fault)."""


class ConnectionFailed(DirectorError):
    """The server (or the local control socket) could not be reached."""


class DSLError(DirectorError):
    """A job line or orchestration file is invalid; carries file:line."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.message = message
        self.source = source
        self.line = line
        where = ""
        if source is not None and line is not None:
            where = f"{source}:{line}: "
        elif line is not None:
            where = f"line {line}: "
        elif source is not None:
            where = f"{source}: "
        super().__init__(f"{where}{message}")


class TransferError(DirectorError):
    """A file transfer failed (missing source, corrupt chunk, unsafe destination)."""


class StorageError(DirectorError):
    """The server's database refused a read or write (full disk, lock, I/O error)."""
