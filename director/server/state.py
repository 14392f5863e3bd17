"""The server's durable state: node keys and join tokens in SQLite (WAL).

Only the server's event-loop thread uses it.  Key states are mirrored in
``registry.KeyTable`` (memory) so the ZAP thread and the per-message role check
never touch the database.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from director.trust.tokens import TokenRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    key TEXT PRIMARY KEY,            -- z85 public key: the identity
    name TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,             -- accepted | pending | rejected | revoked
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    last_seen REAL,
    address TEXT,
    version TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    uses_left INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """Open a WAL database; the file is created 0600 (it lists every node key)."""
    if not path.exists():
        path.touch(mode=0o600)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


@dataclass(frozen=True)
class NodeRecord:
    key: str
    name: str
    state: str
    fingerprint: str
    created: float
    updated: float
    last_seen: float | None
    address: str | None
    version: str | None


class StateDB:
    def __init__(self, path: Path):
        self.path = path
        self.conn = connect(path)
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- nodes -------------------------------------------------------------
    def nodes(self) -> list[NodeRecord]:
        rows = self.conn.execute("SELECT * FROM nodes ORDER BY name").fetchall()
        return [NodeRecord(**dict(r)) for r in rows]

    def node_by_name(self, name: str) -> NodeRecord | None:
        r = self.conn.execute("SELECT * FROM nodes WHERE name=?", (name,)).fetchone()
        return NodeRecord(**dict(r)) if r else None

    def node_by_key(self, key: str) -> NodeRecord | None:
        r = self.conn.execute("SELECT * FROM nodes WHERE key=?", (key,)).fetchone()
        return NodeRecord(**dict(r)) if r else None

    def add_node(self, key: str, name: str, state: str, fingerprint: str) -> None:
        now = time.time()
        self.conn.execute(
            "INSERT INTO nodes(key,name,state,fingerprint,created,updated) VALUES(?,?,?,?,?,?)",
            (key, name, state, fingerprint, now, now),
        )

    def set_state(self, key: str, state: str) -> None:
        self.conn.execute("UPDATE nodes SET state=?, updated=? WHERE key=?",
                          (state, time.time(), key))

    def delete_node(self, key: str) -> None:
        self.conn.execute("DELETE FROM nodes WHERE key=?", (key,))

    def touch_many(self, seen: dict[str, tuple[float, str | None, str | None]]) -> None:
        """Flush last-seen/address/version for many nodes in one transaction."""
        if not seen:
            return
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "UPDATE nodes SET last_seen=?, address=COALESCE(?,address),"
                " version=COALESCE(?,version) WHERE key=?",
                [(t, a, v, k) for k, (t, a, v) in seen.items()],
            )

    # -- tokens ------------------------------------------------------------
    def add_token(self, rec: TokenRecord) -> None:
        self.conn.execute(
            "INSERT INTO tokens(id,secret_hash,created,expires,uses_left,revoked) VALUES(?,?,?,?,?,?)",
            (rec.token_id, rec.secret_hash, rec.created, rec.expires, rec.uses_left,
             int(rec.revoked)),
        )

    def token(self, token_id: str) -> TokenRecord | None:
        r = self.conn.execute("SELECT * FROM tokens WHERE id=?", (token_id,)).fetchone()
        if r is None:
            return None
        return TokenRecord(token_id=r["id"], secret_hash=r["secret_hash"], created=r["created"],
                           expires=r["expires"], uses_left=r["uses_left"],
                           revoked=bool(r["revoked"]))

    def tokens(self) -> list[TokenRecord]:
        ids = [r["id"] for r in self.conn.execute("SELECT id FROM tokens ORDER BY created")]
        return [t for t in (self.token(i) for i in ids) if t is not None]

    def use_token(self, token_id: str) -> None:
        self.conn.execute("UPDATE tokens SET uses_left=uses_left-1 WHERE id=? AND uses_left>0",
                          (token_id,))

    def revoke_token(self, token_id: str) -> bool:
        cur = self.conn.execute("UPDATE tokens SET revoked=1 WHERE id=?", (token_id,))
        return cur.rowcount > 0

    # -- security events (bounded) -------------------------------------------
    def add_events(self, rows: list[tuple], keep: int) -> None:
        """(time, event, fingerprint, name, address, detail) rows; the newest ``keep``
        stay (a range delete on the rowid, like the node's job cache)."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO events(time,event,fingerprint,name,address,detail)"
                " VALUES(?,?,?,?,?,?)", rows)
            self.conn.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                              (keep,))

    def events(self, since: float, limit: int) -> list[dict]:
        rows = self.conn.execute(
            "SELECT time, event, fingerprint, name, address, detail FROM events"
            " WHERE time >= ? ORDER BY id DESC LIMIT ?", (since, limit)).fetchall()
        return [dict(r) for r in reversed(rows)]
