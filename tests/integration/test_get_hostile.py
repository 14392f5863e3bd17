"""A node with an accepted key answering GET jobs with hostile offers and chunks: a raw
pyzmq CURVE peer against a real server process.  Whatever it sends, the server writes
nothing outside DEST_DIR/NODE, ends each GET failed with a clear error (even when the
node then claims success), and keeps serving: a later GET on a real node works.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from director.protocol import frames as fr
from director.protocol import messages as m
from director.protocol.fetch import GetDone, GetPull
from director.transfer.manifest import digest_of
from director.trust import keystore

pytestmark = pytest.mark.integration
CHUNK = 4096


def _file(rel, data: bytes, size: int | None = None) -> dict:
    chunks = [digest_of(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    return {"rel": rel, "size": len(data) if size is None else size, "mode": 0o644,
            "digest": digest_of(data), "chunks": chunks}


def _offer(job_id: str, files: list) -> list[bytes]:
    body = {"job_id": job_id, "chunk_size": CHUNK, "files": files}
    return [fr.VERSION, b"GET_OFFER", json.dumps(body).encode()]


def _data(job_id: str, f: int, c: int, data: bytes) -> list[bytes]:
    return [fr.VERSION, b"GET_DATA", json.dumps({"job_id": job_id, "file": f,
                                                 "chunk": c}).encode(), data]


class Raw:
    def __init__(self, mesh, peer, dest: Path):
        self.mesh, self.peer, self.dest = mesh, peer, dest

    def job(self) -> str:
        """A GET on the raw node; its id once the JOB reached the peer."""
        out = self.mesh.cli("exec", "--target", "raw", f"GET /var/log/x {self.dest}",
                            check=True)
        job_id = out.stdout.strip()
        got = self.peer.recv_until(lambda msgs: any(_job_ids(f) & {job_id} for f in msgs), 5)
        assert any(_job_ids(f) & {job_id} for f in got), got
        return job_id

    def until_done(self, job_id: str, answer=None) -> GetDone:
        """Messages until GET_DONE of ``job_id``; ``answer(pull)`` replies to pulls."""
        for _ in range(200):
            frames = self.peer.recv(5.0)
            assert frames is not None, "no GET_DONE from the server"
            msg = m.decode(frames)
            if isinstance(msg, GetPull) and msg.job_id == job_id and answer is not None:
                answer(msg)
            if isinstance(msg, GetDone) and msg.job_id == job_id:
                return msg
        raise AssertionError("no GET_DONE")

    def lie_and_check(self, job_id: str, words: str) -> dict:
        """The node claims success; the job still ends failed with the server's error."""
        self.peer.send(m.encode(m.Result(job_id, "success", rc=0, exec_time=0.01)))
        self.mesh.wait_for(lambda: self.mesh.ctl("jobs.get", {"id": job_id})["status"]
                           == "failed", 5, f"job {job_id} failed")
        doc = json.loads(self.mesh.cli("job", job_id, "--json", check=True).stdout)
        r = doc["results"]["raw"]
        assert r["status"] == "failed" and words in r["error"], r
        return r


def _job_ids(frames) -> set:
    msg = m.decode(frames)
    if isinstance(msg, m.Job):
        return {msg.job_id}
    if isinstance(msg, m.Jobs):
        return {j.job_id for j in msg.items}
    return set()


def test_hostile_get_replies_write_nothing_outside_and_fail_clearly(mesh):
    top = Path(tempfile.mkdtemp(prefix="dh", dir="/tmp"))
    try:
        _run(mesh, top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _run(mesh, top: Path) -> None:
    mesh.server(env={"DIRECTOR_GET_MAX_BYTES": "100000"})
    cp = mesh.enroll("raw")
    assert cp.returncode == 0, cp.stderr
    real = mesh.add_node("real")
    peer = mesh.raw_peer(pair=keystore.load(cp.home))
    peer.send(m.encode(m.Hello("raw", "9.9.9", "rawboot")))
    mesh.wait_online("raw", timeout=5)
    dest, outside = top / "dest", top / "outside"
    outside.mkdir()
    (dest / "raw").mkdir(parents=True)
    (dest / "raw" / "evil").symlink_to(outside)      # planted: a way out, if followed
    (dest / "raw" / "trap").symlink_to(outside / "t")
    raw = Raw(mesh, peer, dest)

    hostile = [
        ([_file("../../etc/x", b"x")], "unsafe file name '../../etc/x'"),
        ([_file("/abs", b"x")], "unsafe file name '/abs'"),
        ([_file("a/../../b", b"x")], "unsafe file name 'a/../../b'"),
        ([_file("ok\x1b[2J", b"x")], "control characters"),
        ([_file("evil/x", b"x")], "not a plain directory"),
        ([_file("huge", b"x", size=2**50)], "get_max_bytes"),
        ([_file("short", b"x" * 10, size=10 * CHUNK)], "chunk digest(s)"),
        ([{"rel": 5}], "malformed"),
        ([_file("same", b"1"), _file("same", b"2")], "twice"),
    ]
    for files, words in hostile:
        job_id = raw.job()
        peer.send(_offer(job_id, files))
        done = raw.until_done(job_id)
        assert not done.ok and words in done.error, (words, done)
        raw.lie_and_check(job_id, words)

    # bad bytes: an honest offer, then data that does not match its digest
    job_id = raw.job()
    peer.send(_offer(job_id, [_file("good.txt", b"g" * 100)]))
    done = raw.until_done(job_id, lambda pull: peer.send(_data(job_id, 0, 0, b"b" * 100)))
    assert not done.ok and "BLAKE2b" in done.error, done
    raw.lie_and_check(job_id, "BLAKE2b")

    # a chunk never asked for, then one far too big for the chunk size
    job_id = raw.job()
    peer.send(_offer(job_id, [_file("two.txt", b"2" * 100)]))
    done = raw.until_done(job_id, lambda pull: peer.send(_data(job_id, 0, 7, b"2" * 100)))
    assert not done.ok and "not asked for" in done.error, done
    raw.lie_and_check(job_id, "not asked for")

    # a file sent through a planted symlink is written as a file, the link replaced
    job_id = raw.job()
    peer.send(_offer(job_id, [_file("trap", b"t" * 10)]))
    done = raw.until_done(job_id, lambda pull: peer.send(_data(job_id, 0, 0, b"t" * 10)))
    assert done.ok, done
    assert (dest / "raw" / "trap").read_bytes() == b"t" * 10
    assert not (dest / "raw" / "trap").is_symlink()

    # success claimed without any offer
    job_id = raw.job()
    raw.lie_and_check(job_id, "received no files")

    # nothing outside DEST_DIR/raw, no temp files left, the server still serves
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in dest.iterdir()) == ["raw"]
    assert sorted(p.name for p in (dest / "raw").iterdir()) == ["evil", "trap"]
    assert not os.path.lexists("/abs")
    health = json.loads(mesh.cli("health", "--json", check=True).stdout)
    assert health["nodes_online"] == 2 and real.alive()
    src = top / "real.txt"
    src.write_text("from a real node")
    out = mesh.cli("exec", "--wait", "--json", "--target", "real", f"GET {src} {dest}",
                   check=True)
    assert json.loads(out.stdout)[0]["status"] == "success"
    assert (dest / "real" / "real.txt").read_text() == "from a real node"
    assert "Traceback" not in mesh.server_proc.log()
