"""The real COPY driver against a chunk server on 127.0.0.1 with real CURVE keys.

The server side here is a plain ROUTER thread that answers CHUNK_REQ with the
source file's chunks -- honestly, corrupted, truncated or refused, as each test
asks -- so the node's real pull (``CopyDriver`` -> ``Copier`` -> ``PullSession``
-> ``ContentStore`` -> ``assemble``) is what is tested: a bad chunk is retried,
a chunk that stays bad or is refused fails the job, and a failed COPY never
touches the destination nor leaves temp files behind.
"""

from __future__ import annotations

import socket
import threading
import time
from functools import partial
from pathlib import Path
from typing import Callable

import pytest
import zmq

from director.client.copying import CopyDriver
from director.jobs.nodestate import JobCache, NodeState
from director.client.runner import SelectorWatcher
from director.jobs.dsl import parse_line
from director.net import transport
from director.protocol import messages as M
from director.transfer.chunking import build_manifest, read_chunk
from director.transfer.store import TEMP_PREFIX
from director.trust import keystore

CS = 4096
OLD = b"".join(bytes([i]) * CS for i in range(1, 5)) + b"tail"   # 4 chunks + 4 bytes
NEW = b"".join(bytes([i]) * CS for i in range(9, 14)) + b"more"  # 5 chunks + 4 bytes

# wire(f, c, data, attempt) -> the reply: a CHUNK payload (bytes) or a CHUNK_ERR text (str)
Wire = Callable[[int, int, bytes, int], "bytes | str"]


def honest(f: int, c: int, data: bytes, attempt: int) -> bytes | str:
    return data


class ChunkServer:
    """A CURVE ROUTER serving one manifest's chunks through ``wire``."""

    def __init__(self, manifest, paths, wire: Wire):
        self.pair = keystore.generate()
        self.manifest, self.paths, self.wire = manifest, paths, wire
        self.ctx = zmq.Context()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.curve_server = True
        self.sock.curve_secretkey = self.pair.secret
        self.sock.curve_publickey = self.pair.public
        self.sock.bind(self.endpoint)
        self.asked: list[tuple[int, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        attempts: dict[tuple[int, int], int] = {}
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            rid, *frames = self.sock.recv_multipart()
            req = M.decode(frames)
            assert isinstance(req, M.ChunkReq)
            for f, c in req.chunks:
                self.asked.append((f, c))
                attempts[(f, c)] = attempts.get((f, c), 0) + 1
                data = read_chunk(self.paths[f], self.manifest.files[f], c, CS)
                reply = self.wire(f, c, data, attempts[(f, c)])
                msg = (M.ChunkErr(req.job_id, f, c, reply) if isinstance(reply, str)
                       else M.Chunk(req.job_id, f, c, reply))
                self.sock.send_multipart([rid, *M.encode(msg)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


class Node:
    """A node home with its job state, and the real COPY driver pointed at a server."""

    def __init__(self, tmp: Path, wire: Wire = honest, content: bytes = NEW):
        self.src = tmp / "src" / "app.bin"
        self.src.parent.mkdir()
        self.src.write_bytes(content)
        self.dest = tmp / "dest"
        self.dest.mkdir()
        self.target = self.dest / "app.bin"
        self.target.write_bytes(OLD)  # what the node has now
        self.home = tmp / "home"
        self.home.mkdir()
        self.manifest, paths = build_manifest([str(self.src)], f"{self.dest}/", base=tmp,
                                              chunk_size=CS)
        self.server = ChunkServer(self.manifest, paths, wire)
        self.ctx = zmq.Context()
        self.pair = keystore.generate()
        connect = partial(transport.client_socket, self.ctx, self.pair, self.server.pair.public,
                          self.server.endpoint, 1.0)
        self.watcher = SelectorWatcher()
        self.cache = JobCache(self.home / "jobcache.db")
        self.driver = CopyDriver(self.home, NodeState(self.home), self.cache, self.watcher,
                                 connect)
        self.n = 0

    def copy(self, timeout: float = 20.0):
        """One COPY job through the driver, as the agent runs it: start, then wait for
        the wake-up on the event loop."""
        self.n += 1
        job = M.Job(f"{self.n:08x}", parse_line(f"COPY {self.src} {self.dest}/"),
                    "aaaaaaaa.0", self.n, manifest=self.manifest)
        self.driver.start(job)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = self.driver.handle(self.watcher.poll(0.2))
            if ended:
                ((job_id, out),) = ended
                assert job_id == job.job_id
                return out
        raise AssertionError("the COPY never ended")

    def temp_files(self) -> list[Path]:
        return [p for p in self.dest.iterdir() if p.name.startswith(TEMP_PREFIX)]

    def close(self) -> None:
        assert self.driver.close()
        self.cache.close()
        self.watcher.close()
        self.server.close()
        self.ctx.term()


@pytest.fixture
def make_node(tmp_path):
    nodes: list[Node] = []

    def make(wire: Wire = honest, **kw) -> Node:
        node = Node(tmp_path, wire, **kw)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.close()


def test_copy_pulls_only_missing_chunks_then_nothing(make_node):
    node = make_node()
    out = node.copy()
    assert out.status == "success", out.error
    assert node.target.read_bytes() == NEW
    assert out.transfer["files"] == 1 and out.transfer["bytes_sent"] == len(NEW)
    asked = len(node.server.asked)
    again = node.copy()
    assert again.status == "success" and again.cached
    assert again.transfer["bytes_sent"] == 0 and len(node.server.asked) == asked


def test_a_corrupt_chunk_is_asked_again_and_the_copy_succeeds(make_node):
    node = make_node(lambda f, c, data, n: b"X" + data[1:] if (c == 2 and n == 1) else data)
    out = node.copy()
    assert out.status == "success", out.error
    assert node.target.read_bytes() == NEW
    assert node.server.asked.count((0, 2)) == 2


def test_a_truncated_chunk_is_asked_again(make_node):
    node = make_node(lambda f, c, data, n: data[:-1] if (c == 0 and n == 1) else data)
    out = node.copy()
    assert out.status == "success", out.error
    assert node.target.read_bytes() == NEW and node.server.asked.count((0, 0)) == 2


def test_a_chunk_that_stays_corrupt_fails_without_touching_the_destination(make_node):
    node = make_node(lambda f, c, data, n: b"\0" * len(data) if c == 1 else data)
    out = node.copy()
    assert out.status == "failed" and "failed verification" in out.error
    assert node.target.read_bytes() == OLD
    assert node.temp_files() == []


def test_a_chunk_the_server_cannot_send_fails_the_copy(make_node):
    node = make_node(lambda f, c, data, n: "source changed" if c == 3 else data)
    out = node.copy()
    assert out.status == "failed"
    assert "could not send chunk 0/3: source changed" in out.error
    assert node.target.read_bytes() == OLD and node.temp_files() == []


def test_a_copy_without_a_manifest_fails_cleanly(make_node):
    node = make_node()
    node.manifest = None
    out = node.copy()
    assert out.status == "failed" and "manifest" in out.error
    assert node.target.read_bytes() == OLD and node.server.asked == []


def test_after_a_crash_mid_copy_the_retry_pulls_only_what_was_missing(make_node):
    import json as _json

    node = make_node()
    # a previous agent was killed while assembling: its temp file holds the first two
    # chunks (and half of the third), its inflight.json names the directory
    assert node.driver.close()
    written = NEW[:2 * CS + CS // 2]
    (node.dest / f"{TEMP_PREFIX}deadbeef").write_bytes(written)
    (node.home / "transfer" / "inflight.json").write_text(
        _json.dumps({"dirs": [str(node.dest)], "chunk_size": CS}))
    node.driver = CopyDriver(node.home, NodeState(node.home), node.cache, node.watcher,
                             node.driver.copier.connect)
    assert node.temp_files() == []  # stale temp files go at start
    out = node.copy()
    assert out.status == "success", out.error
    assert node.target.read_bytes() == NEW
    assert out.transfer["bytes_sent"] == len(NEW) - 2 * CS
    assert {c for _, c in node.server.asked} == set(range(2, -(-len(NEW) // CS)))
