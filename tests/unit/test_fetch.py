"""GET's receiving side: the names a node may give (a hypothesis property: no accepted
name resolves outside DEST_DIR/NODE), the pure session's chunk rules, and the
server's driver writing real files in a temp directory that holds symlink traps
(its ``send`` is a list: the messages it would send to the node)."""

from __future__ import annotations

import os
import select
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from director.protocol import messages as M
from director.protocol.fetch import GetData, GetDone, GetOffer, GetPull
from director.server.fetchgate import FetchChunk, FetchStart
from director.server.fetching import Fetcher
from director.transfer.fetch import (MAX_DEPTH, FetchError, FetchSession, name_problem,
                                     split_name)
from director.transfer.manifest import FileEntry, digest_of

JOB = "0123456789abcdef"
CHUNK = 4096

# pieces hostile names are made of: traversal, absolute roots, control characters,
# our temp prefix, symlink names planted in the destination, and plain words
_PIECES = st.sampled_from(["..", ".", "", "/", "a", "b", "evil", "link", "x.txt", "\x00",
                           "\n", "\x1b[2J", "\x85", "\u202e", "é", "..a", "a..",
                           ".director-get-1", "~", "\\", "\ud800", "a" * 300])
NAMES = st.lists(_PIECES, min_size=1, max_size=8).map("/".join) | st.text(max_size=40)


@given(NAMES)
@settings(max_examples=2000)
def test_an_accepted_name_never_resolves_outside(name):
    root = "/dest/node"
    if name_problem(name) is not None:
        with pytest.raises(FetchError):
            split_name(name)
        return
    parts = split_name(name)
    assert 1 <= len(parts) <= MAX_DEPTH
    resolved = os.path.normpath(os.path.join(root, *parts))
    assert resolved.startswith(root + "/")
    assert resolved == os.path.join(root, name)  # normalizing changed nothing
    assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f for ch in name)


@pytest.mark.parametrize("name", ["../../etc/x", "/abs", "a/../../b", "a//b", "./a", "a/.",
                                  "a\x00b", "a\nb", "", "x" * 256, "/".join("a" * 33),
                                  ".director-get-abc"])
def test_unsafe_names_are_refused(name):
    assert name_problem(name) is not None


def entry(name: str, data: bytes) -> FileEntry:
    chunks = tuple(digest_of(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK))
    return FileEntry(name, len(data), 0o644, digest_of(data), chunks)


def test_session_orders_chunks_and_checks_each_and_the_whole():
    data = os.urandom(3 * CHUNK + 10)
    s = FetchSession([entry("f", data)], CHUNK, limit=10**6)
    s.plan(set())
    assert s.next_file() == 0
    reqs = s.requests()
    assert reqs == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert s.accept(0, 1, data[CHUNK:2 * CHUNK]) == []  # early: held back
    with pytest.raises(FetchError, match="not asked for"):
        s.accept(0, 1, data[CHUNK:2 * CHUNK])
    got = s.accept(0, 0, data[:CHUNK])
    assert got == [data[:CHUNK], data[CHUNK:2 * CHUNK]]
    with pytest.raises(FetchError, match="BLAKE2b"):
        s.accept(0, 2, b"y" * CHUNK)


def test_session_refuses_short_chunks_a_bad_whole_and_the_limit():
    data = os.urandom(CHUNK + 1)
    s = FetchSession([entry("f", data)], CHUNK, limit=10**6)
    s.plan(set())
    s.next_file()
    s.requests()
    with pytest.raises(FetchError, match="has 1 bytes"):
        s.accept(0, 0, data[:1])
    lying = FileEntry("g", 3, 0o644, digest_of(b"xyz"), (digest_of(b"abc"),))
    s = FetchSession([lying], CHUNK, limit=10)
    s.plan(set())
    s.next_file()
    s.requests()
    s.accept(0, 0, b"abc")
    assert s.file_complete()
    with pytest.raises(FetchError, match="whole-file"):
        s.check_file()
    with pytest.raises(FetchError, match="get_max_bytes limit of 10 bytes"):
        FetchSession([entry("f", data)], CHUNK, limit=10)
    with pytest.raises(FetchError, match="both a file and a directory"):
        FetchSession([entry("a", b"1"), entry("a/b", b"2")], CHUNK, limit=10)


class Run:
    """The real driver, its sends collected and answered as an honest node would."""

    def __init__(self, dest: Path, limit: int = 10**6):
        self.sent: list = []
        self.ended: dict = {}
        self.fetcher = Fetcher(limit, lambda route, frames: self.sent.append(M.decode(frames)),
                               lambda job, key, *rest: self.ended.__setitem__((job, key), rest))
        self.dest = dest
        self.n = 0

    def close(self) -> None:
        self.fetcher.close()

    def get(self, files: dict[str, bytes], job: str | None = None) -> tuple:
        """One GET (a new job id unless ``job``): (status, error, transfer)."""
        self.n += 1
        job = job or f"{JOB[:-4]}{self.n:04x}"
        entries = tuple(entry(n, d) for n, d in files.items())
        datas = list(files.values())
        self.fetcher.handle(FetchStart(b"r", "k", "node1", job, str(self.dest),
                                       GetOffer(job, CHUNK, entries)))
        for _ in range(10_000):
            if not self.sent:  # the check of what is in place runs on a thread
                assert select.select([self.fetcher.wake_r], [], [], 5.0)[0]
                self.fetcher.ready()
                continue
            msg = self.sent.pop(0)
            if isinstance(msg, GetDone):
                assert not self.sent
                return self.ended.pop((job, "k"))
            assert isinstance(msg, GetPull)
            for f, c in msg.chunks:
                chunk = datas[f][c * CHUNK:(c + 1) * CHUNK]
                self.fetcher.handle(FetchChunk(b"r", "k", GetData(job, f, c, chunk)))
        raise AssertionError("the GET never ended")


def once(dest: Path, files: dict[str, bytes]) -> tuple:
    run = Run(dest)
    try:
        return run.get(files)
    finally:
        run.close()


def _tree(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


@given(st.dictionaries(NAMES, st.binary(max_size=2 * CHUNK + 1), min_size=1, max_size=4))
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_the_driver_writes_nothing_outside_dest_node(files):
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        outside, dest = top / "outside", top / "dest"
        outside.mkdir()
        node = dest / "node1"
        node.mkdir(parents=True)
        (node / "evil").symlink_to(outside)            # a directory link out
        (node / "link").symlink_to(outside / "x.txt")  # a file link out
        (node / "a").mkdir()
        (node / "a" / "evil").symlink_to(outside)
        status, error, transfer = once(dest, files)
        assert _tree(outside) == set()                  # nothing written through a link
        assert all(p in ("outside", "dest", "dest/node1") or p.startswith("dest/node1/")
                   for p in _tree(top)), _tree(top)
        assert not any(p.name.startswith(".director-get-") for p in dest.rglob("*"))
        if status == "success":
            for name, data in files.items():
                assert (node / name).read_bytes() == data
                assert not (node / name).is_symlink()
            assert transfer["files"] == len(files)
        else:
            assert error


def test_unchanged_files_are_skipped_and_changed_ones_fetched(tmp_path):
    run = Run(tmp_path)
    files = {"a.txt": os.urandom(CHUNK * 2), "d/b.txt": b"b"}
    status, error, t = run.get(files)
    assert status == "success", error
    assert (t["skipped"], t["bytes_sent"], t["chunks_sent"]) == (0, 2 * CHUNK + 1, 3)
    status, error, t = run.get(files)
    assert (status, t["skipped"], t["bytes_sent"], t["chunks_reused"]) == ("success", 2, 0, 3)
    assert once(tmp_path, files)[2]["skipped"] == 2  # a restarted server hashes what is there
    (tmp_path / "node1" / "d" / "b.txt").write_bytes(b"tampered")
    status, error, t = run.get(files)
    assert (t["skipped"], t["bytes_sent"]) == (1, 1)
    assert (tmp_path / "node1" / "d" / "b.txt").read_bytes() == b"b"
    run.close()
    assert oct((tmp_path / "node1" / "a.txt").stat().st_mode & 0o7777) == "0o644"


def test_special_files_and_directories_in_the_way_are_not_replaced(tmp_path):
    node = tmp_path / "node1"
    (node / "fifo").parent.mkdir(parents=True)
    os.mkfifo(node / "fifo")
    (node / "dir").mkdir()
    status, error, _ = once(tmp_path, {"fifo": b"x"})
    assert status == "failed" and "special file" in error
    status, error, _ = once(tmp_path, {"dir": b"x"})
    assert status == "failed" and "directory" in error
    assert (node / "dir").is_dir()


def test_relative_dest_and_symlinked_node_dir_are_refused(tmp_path):
    status, error, _ = once(Path("relative/dir"), {"a": b"1"})
    assert status == "failed" and "absolute DEST_DIR" in error
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "node1").symlink_to(tmp_path / "elsewhere")
    status, error, _ = once(tmp_path / "d", {"a": b"1"})
    assert status == "failed" and "not a directory" in error
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_second_offer_for_the_same_job_fails_it(tmp_path):
    run = Run(tmp_path)
    assert run.get({"a": b"1"}, JOB)[0] == "success"
    status, error, _ = run.get({"a": b"1"}, JOB)
    assert status == "failed" and "twice" in error
    run.close()


def test_a_node_that_cannot_send_a_chunk_fails_the_get_with_its_word_escaped(tmp_path):
    run = Run(tmp_path)
    run.fetcher.handle(FetchStart(b"r", "k", "node1", JOB, str(tmp_path),
                                  GetOffer(JOB, CHUNK, (entry("f", b"data"),))))
    assert select.select([run.fetcher.wake_r], [], [], 5.0)[0]
    run.fetcher.ready()
    pull = run.sent.pop(0)
    assert isinstance(pull, GetPull) and pull.chunks == ((0, 0),)
    run.fetcher.handle(FetchChunk(b"r", "k", GetData(JOB, 0, 0, b"", "changed\x1b[2J")))
    done = run.sent.pop(0)
    assert isinstance(done, GetDone) and not done.ok
    assert "could not send 'f'" in done.error and "\x1b" not in done.error
    assert run.ended[(JOB, "k")][0] == "failed"
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == []  # temp file removed
    run.close()
