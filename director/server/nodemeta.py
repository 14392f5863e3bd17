"""Node facts (as each node last said them at HELLO) and operator labels, in the
server's SQLite database beside the node rows, keyed by the node's key (its identity).

A node row's deletion takes its facts and labels with it (a trigger), so a key that
enrolls again starts with none.  Used through ``SqlStore`` (store.py), which turns
SQLite failures into StorageError.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS node_facts (
    key TEXT PRIMARY KEY,            -- the node's key (nodes.key)
    facts TEXT NOT NULL,             -- JSON: protocol.facts.Facts.to_dict()
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS node_labels (
    key TEXT NOT NULL,
    label TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (key, label)
);
CREATE TRIGGER IF NOT EXISTS node_meta_gone AFTER DELETE ON nodes BEGIN
    DELETE FROM node_facts WHERE key = old.key;
    DELETE FROM node_labels WHERE key = old.key;
END;
"""


class NodeMetaStore:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.executescript(SCHEMA)

    def put_facts(self, rows: dict[str, str]) -> None:
        """{key: facts JSON} in one transaction; keys with no node row are skipped."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO node_facts(key, facts, updated)"
                " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM nodes WHERE key = ?)"
                " ON CONFLICT(key) DO UPDATE SET facts = excluded.facts,"
                " updated = excluded.updated WHERE facts != excluded.facts",
                [(k, text, now, k) for k, text in rows.items()])

    def facts_of(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT facts FROM node_facts WHERE key = ?",
                                (key,)).fetchone()
        return _facts(row[0]) if row else None

    def labels_of(self, key: str) -> dict[str, str]:
        rows = self.conn.execute("SELECT label, value FROM node_labels WHERE key = ?"
                                 " ORDER BY label", (key,))
        return {r[0]: r[1] for r in rows}

    def all_labels(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for key, label, value in self.conn.execute(
                "SELECT key, label, value FROM node_labels ORDER BY key, label"):
            out.setdefault(key, {})[label] = value
        return out

    def all_facts(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, text in self.conn.execute("SELECT key, facts FROM node_facts"):
            facts = _facts(text)
            if facts is not None:
                out[key] = facts
        return out

    def set_labels(self, key: str, labels: dict[str, str]) -> None:
        """Replace the node's labels with ``labels``, all or nothing."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM node_labels WHERE key = ?", (key,))
            self.conn.executemany("INSERT INTO node_labels(key, label, value) VALUES(?,?,?)",
                                  [(key, k, v) for k, v in labels.items()])


def _facts(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
