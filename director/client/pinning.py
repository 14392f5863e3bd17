"""Where a node's server is and which key it must have, kept in the node's home."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from director.errors import ConfigError, DirectorError
from director.trust.keyfmt import key_to_z85, z85_to_key
from director.trust.keystore import ensure_private_dir, write_private_file

FILE = "server.json"


@dataclass(frozen=True)
class Pinned:
    address: str       # HOST[:PORT] as the operator gave it
    server_key: bytes  # raw Curve25519 public key of the server
    name: str = ""     # the name the server knows this node by


def path(home: str | Path) -> Path:
    return Path(home) / "keys" / FILE


def save(home: str | Path, pinned: Pinned) -> None:
    ensure_private_dir(Path(home) / "keys")
    data = {"address": pinned.address, "server_key": key_to_z85(pinned.server_key),
            "name": pinned.name}
    write_private_file(path(home), (json.dumps(data, indent=1) + "\n").encode(), mode=0o644)


def load(home: str | Path) -> Pinned | None:
    p = path(home)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
        return Pinned(address=str(data["address"]), server_key=z85_to_key(data["server_key"]),
                      name=str(data.get("name", "")))
    except (OSError, ValueError, KeyError, TypeError, DirectorError):
        raise ConfigError(f"{p} is damaged: enroll again with 'director enroll'") from None
