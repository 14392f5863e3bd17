"""Corrupt and truncated chunks on the node: retried, then a failure that never touches
the destination.

Drives the real node-side pieces (``plan_transfer`` -> ``PullSession`` ->
``ContentStore`` -> ``assemble``) with a fake server in-process, the same way
``director.client.copying.Copier`` does over the wire: a chunk is stored only when
the session verified it, and a file is assembled only after a successful session.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import pytest

from director.errors import TransferError
from director.transfer.chunking import build_manifest, read_chunk
from director.transfer.session import PullSession
from director.transfer.store import (
    TEMP_PREFIX, ContentStore, StatCache, assemble, chunk_source, plan_transfer,
)

CS = 4096
OLD = b"".join(bytes([i]) * CS for i in range(1, 5)) + b"tail"  # 4 chunks + 4 bytes


def ref(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


class Node:
    """A node's transfer state (content store + stat cache) and one COPY to DEST."""

    def __init__(self, tmp: Path, new: bytes):
        self.src = tmp / "src" / "app.bin"
        self.src.parent.mkdir()
        self.src.write_bytes(new)
        self.dest_dir = tmp / "dest"
        self.dest_dir.mkdir()
        self.target = self.dest_dir / "app.bin"
        self.target.write_bytes(OLD)  # what the node has now
        self.store = ContentStore(tmp / "home" / "chunks")
        self.stats = StatCache(tmp / "home" / "statcache.db")
        self.manifest, self.paths = build_manifest([str(self.src)], f"{self.dest_dir}/",
                                                   base=tmp, chunk_size=CS)
        self.plans = plan_transfer(self.manifest, self.stats, self.store)
        self.needed = [(p.index, c) for p in self.plans for c in p.need]
        self.expected = {(f, c): self.manifest.files[f].chunks[c] for f, c in self.needed}
        self.session = PullSession(self.needed, lambda f, c: self.expected[(f, c)], window=4)
        self.asked: list[tuple[int, int]] = []

    def serve(self, f: int, c: int) -> bytes:
        """What an honest server sends for chunk (f, c)."""
        return read_chunk(self.paths[f], self.manifest.files[f], c, CS)

    def pull(self, wire: Callable[[int, int, bytes, int], bytes | None]) -> None:
        """The node's pull loop; ``wire(f, c, data, attempt)`` may alter a reply or drop
        it (None -> the node's timer fires).  Bounded."""
        attempts: dict[tuple[int, int], int] = {}
        for _ in range(200):
            if self.session.done or self.session.failed:
                return
            lost = False
            for f, c in self.session.next_requests():
                self.asked.append((f, c))
                attempts[(f, c)] = attempts.get((f, c), 0) + 1
                data = wire(f, c, self.serve(f, c), attempts[(f, c)])
                if data is None:
                    lost = True
                elif self.session.on_chunk(f, c, data):
                    self.store.put(self.expected[(f, c)], data)
            if lost:
                self.session.on_timeout()
        raise AssertionError("pull loop did not end")

    def finish(self) -> None:
        """Assemble (only after a successful session), as the Copier does."""
        assert self.session.done and not self.session.failed
        for p in self.plans:
            if not p.unchanged:
                assemble(self.manifest.files[p.index], p.target, CS, self.store, self.stats,
                         source=chunk_source(p, CS, self.store, self.stats))

    def untouched(self) -> bool:
        return (self.target.read_bytes() == OLD
                and sorted(os.listdir(self.dest_dir)) == ["app.bin"])  # no temp file

    def close(self) -> None:
        self.stats.close()


def changed() -> bytes:
    """OLD with 100 bytes changed inside chunk 2 (so exactly one chunk is needed)."""
    data = bytearray(OLD)
    data[2 * CS + 100:2 * CS + 200] = b"x" * 100
    return bytes(data)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path, changed())
    yield n
    n.close()


def test_plan_needs_only_the_changed_chunk(node):
    assert node.needed == [(0, 2)]
    assert node.plans[0].reused == 4 and not node.plans[0].unchanged


def test_corrupt_chunk_is_retried_then_the_file_is_right(node):
    def wire(f, c, data, attempt):
        return b"\xff" + data[1:] if attempt == 1 else data  # first answer corrupt

    node.pull(wire)
    assert node.session.done and node.session.failed is None
    assert node.session.stats.retries == 1
    assert node.session.stats.chunks_received == 1 and node.session.stats.bytes_received == CS
    assert node.asked == [(0, 2), (0, 2)]
    node.finish()
    assert node.target.read_bytes() == changed()
    assert sorted(os.listdir(node.dest_dir)) == ["app.bin"]


@pytest.mark.parametrize("damage", [
    pytest.param(lambda d: d[:-1] + bytes([d[-1] ^ 1]), id="bit-flip"),
    pytest.param(lambda d: d[: len(d) // 2], id="truncated"),
    pytest.param(lambda d: b"", id="empty"),
    pytest.param(lambda d: d + b"extra", id="too-long"),
])
def test_persistently_bad_chunk_fails_and_destination_is_untouched(node, damage):
    node.pull(lambda f, c, data, attempt: damage(data))
    s = node.session
    assert not s.done and s.failed and "failed verification" in s.failed
    assert "0/2" in s.failed
    assert node.asked == [(0, 2)] * (s.max_retries + 1)  # retried, then gave up
    assert s.stats.chunks_received == 0 and s.stats.bytes_received == 0
    assert s.next_requests() == []
    # Nothing bad reached the content store, and the destination is as it was.
    assert not node.store.has(node.expected[(0, 2)])
    assert node.untouched()
    # Even a caller that ignored the failure could not write the file.
    with pytest.raises(TransferError, match="missing"):
        assemble(node.manifest.files[0], node.target, CS, node.store, node.stats)
    assert node.untouched()


def test_lost_replies_are_retried_then_fail(node):
    node.pull(lambda f, c, data, attempt: None)
    s = node.session
    assert s.failed and "timed out" in s.failed
    assert len(node.asked) == s.max_retries + 1
    assert node.untouched()


def test_lost_reply_then_good_one(node):
    node.pull(lambda f, c, data, attempt: None if attempt < 3 else data)
    assert node.session.done and node.session.stats.retries == 2
    node.finish()
    assert node.target.read_bytes() == changed()


def test_store_refuses_a_chunk_that_does_not_match_its_digest(node):
    d = node.expected[(0, 2)]
    with pytest.raises(TransferError):
        node.store.put(d, b"not the chunk")
    assert not node.store.has(d)


def test_chunk_rotten_in_store_fails_assembly_untouched_then_refetched(tmp_path):
    """Pulled fine, but the stored copy rots before assembly: the whole-file check
    refuses it, the destination is untouched, and the bad chunk is dropped so the next
    attempt fetches it again."""
    n = Node(tmp_path, changed())
    try:
        n.pull(lambda f, c, data, attempt: data)
        d = n.expected[(0, 2)]
        stored = n.store.root / d[:2] / d
        good = stored.read_bytes()
        stored.write_bytes(b"\x00" + good[1:])
        with pytest.raises(TransferError):
            n.finish()
        assert n.untouched()
        assert not n.store.has(d)  # dropped: a retry cannot be poisoned by it

        again = plan_transfer(n.manifest, n.stats, n.store)
        assert [c for p in again for c in p.need] == [2]
        n.store.put(d, good)
        for p in again:
            assemble(n.manifest.files[p.index], p.target, CS, n.store, n.stats,
                         source=chunk_source(p, CS, n.store, n.stats))
        assert n.target.read_bytes() == changed()
        assert sorted(os.listdir(n.dest_dir)) == ["app.bin"]
    finally:
        n.close()


def test_unrequested_chunk_is_a_protocol_error(node):
    from director.errors import ProtocolError

    with pytest.raises(ProtocolError):
        node.session.on_chunk(0, 2, node.serve(0, 2))  # never requested
    with pytest.raises(ProtocolError):
        node.session.on_chunk(0, 0, node.serve(0, 0))  # never needed
    assert node.untouched()
    assert not any(name.startswith(TEMP_PREFIX) for name in os.listdir(node.dest_dir))
