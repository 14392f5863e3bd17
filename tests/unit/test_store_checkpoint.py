"""The server's store copies its write-ahead log back from a thread (store.Checkpointer):
the event loop's commits only append to the log."""

from __future__ import annotations

import sqlite3
import time

from director.server.store import SqlStore


def _in_main_file(path, orch: str) -> bool:
    """Read the database file alone (``immutable``: its WAL is ignored)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT 1 FROM retries WHERE orch=?", (orch,)).fetchone() is not None
    except sqlite3.OperationalError:  # not even the table is there yet
        return False
    finally:
        conn.close()


def test_a_commit_reaches_the_database_file_through_the_thread(tmp_path):
    path = tmp_path / "server.db"
    store = SqlStore(path, checkpoint_every=0.05)
    try:
        assert store.state.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        store.state.conn.execute("INSERT INTO retries(orch, retry_of) VALUES('o1', 'x')")
        deadline = time.monotonic() + 5
        while not _in_main_file(path, "o1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_main_file(path, "o1")
    finally:
        store.close()
    assert not store.checkpointer.is_alive()


def test_without_the_thread_a_small_commit_stays_in_the_log(tmp_path):
    path = tmp_path / "server.db"
    store = SqlStore(path)
    try:
        store.state.conn.execute("INSERT INTO retries(orch, retry_of) VALUES('o1', 'x')")
        time.sleep(0.2)
        assert not _in_main_file(path, "o1")  # so the test above shows the thread's work
    finally:
        store.close()
