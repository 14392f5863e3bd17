"""COPY/ADD on the node: plan against what is here, pull only missing chunks.

Runs in a job worker thread with its own CURVE connection to the server (the
same node key, so the same identity); chunk answers go back to the connection
that asked.  Only chunks of the manifest this job was sent can be asked for.
"""

from __future__ import annotations

import dataclasses
from functools import partial
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING


from director.errors import DirectorError, ProtocolError
from director.jobs.dsl import Instruction
from director.jobs.executor import Outcome
from director.net import transport
from director.protocol.frames import decode, make
from director.transfer.chunking import Manifest
from director.transfer.session import PullSession
from director.transfer.store import (ContentStore, StatCache, apply_attrs, assemble,
                                     chunk_source, cleanup_temp_files, create_dirs,
                                     plan_transfer)

if TYPE_CHECKING:
    from director.client.agent import Agent

log = logging.getLogger("director.copy")
WINDOW = 8
CHUNK_TIMEOUT = 15.0


class Copier:
    def __init__(self, agent: Agent):
        self.agent = agent
        root = agent.home / "transfer"
        root.mkdir(mode=0o700, exist_ok=True)
        self.store = ContentStore(root / "chunks")
        self.stats = StatCache(root / "statcache.db")
        self.inflight_file = root / "inflight.json"
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # set by the agent: transfers give up at once
        self._clean_previous()

    def _clean_previous(self) -> None:
        """Remove temp files a transfer cut short by a crash or restart left behind."""
        try:
            dirs = json.loads(self.inflight_file.read_text())
        except (OSError, ValueError):
            return
        removed = cleanup_temp_files([Path(d) for d in dirs if isinstance(d, str)])
        if removed:
            log.info("removed %d stale temp file(s) from an interrupted transfer", removed)
        self.inflight_file.unlink(missing_ok=True)

    def close(self) -> None:
        self.stats.close()

    # -- one COPY job (worker thread) -----------------------------------------------
    def run(self, job_id: str, instr: Instruction, workdir: str, body: dict) -> Outcome:
        start = time.perf_counter()
        try:
            manifest = Manifest.from_dict(body.get("manifest"))
        except ProtocolError as exc:
            return Outcome("failed", error=f"bad manifest from server: {exc}")
        dest = instr.dest if instr.dest.startswith("/") else os.path.join(workdir, instr.dest)
        if instr.dest.endswith("/") and not dest.endswith("/"):
            dest += "/"
        manifest = dataclasses.replace(manifest, dest=dest)
        # Pin every chunk of this manifest first: planning and pulling add chunks to
        # the bounded store, and eviction must not drop one assembly relies on.
        pinned = [d for e in manifest.files for d in e.chunks]
        self.store.pin(pinned)
        try:
            with self.lock:  # one planner at a time: the stat cache is shared
                plans = plan_transfer(manifest, self.stats, self.store)
            needed = [(p.index, c) for p in plans for c in p.need]
            expected = {(f, c): manifest.files[f].chunks[c] for f, c in needed}
            # a chunk fetched once but used again later is kept in the store for then
            keep = {d for p in plans if not p.unchanged
                    for c, d in enumerate(manifest.files[p.index].chunks)
                    if c not in p.need and c not in p.local and not self.store.has(d)}
            dirs = sorted({str(p.target.parent) for p in plans if not p.unchanged})
            self.inflight_file.write_text(json.dumps(dirs))
            with _Stream(self, job_id, needed, expected, keep, instr.options.timeout) as stream:
                for p in plans:
                    if not p.unchanged:
                        assemble(manifest.files[p.index], p.target, manifest.chunk_size,
                                 self.store, self.stats,
                                 source=chunk_source(p, manifest.chunk_size, self.store,
                                                     self.stats, partial(stream.get, p.index)))
                pulled = stream.session.stats
            self.inflight_file.unlink(missing_ok=True)
            create_dirs(manifest)
            mode = int(instr.chmod, 8) if instr.chmod else None
            for p in plans:
                entry_mode = mode if mode is not None else manifest.files[p.index].mode
                apply_attrs(p.target, entry_mode, instr.chown)
        except DirectorError as exc:
            return Outcome("failed", error=str(exc), exec_time=time.perf_counter() - start)
        except OSError as exc:
            return Outcome("failed", error=f"{exc.filename or 'COPY'}: {exc.strerror}",
                           exec_time=time.perf_counter() - start)
        finally:
            self.store.unpin(pinned)
        transfer = {
            "files": len(manifest.files), "bytes_total": manifest.bytes_total,
            "bytes_sent": pulled.bytes_received, "chunks_sent": pulled.chunks_received,
            "chunks_reused": sum(p.reused for p in plans),
            "skipped": sum(1 for p in plans if p.unchanged),
        }
        return Outcome("success", rc=0, exec_time=time.perf_counter() - start,
                       transfer=transfer)


class _Stream:
    """Chunks from the server in the order assembly wants them, a window in flight.

    Each chunk is BLAKE2b-checked on arrival (PullSession); arrived chunks wait in
    memory only until assembly reaches them, so memory stays at about a window.
    """

    def __init__(self, copier: Copier, job_id: str, needed: list, expected: dict,
                 keep: set, timeout: float):
        self.copier, self.job_id, self.expected, self.keep = copier, job_id, expected, keep
        self.session = PullSession(needed, lambda f, c: expected[(f, c)], window=WINDOW)
        self.arrived: dict[tuple[int, int], bytes] = {}
        self.deadline = time.monotonic() + timeout
        self.last_heard = time.monotonic()
        self.timeout = timeout
        self.sock = None
        if needed:
            agent = copier.agent
            self.sock = transport.client_socket(agent.ctx, agent.pair, agent.server_key,
                                                agent.endpoint, agent.settings.heartbeat_interval)

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close(0)

    def get(self, f: int, c: int) -> bytes:
        while (f, c) not in self.arrived:
            self._pump()
        data = self.arrived.pop((f, c))
        d = self.expected[(f, c)]
        if d in self.keep:
            self.copier.store.put(d, data, verified=True)
        return data

    def _pump(self) -> None:
        s = self.session
        if s.failed:
            raise DirectorError(f"transfer failed: {s.failed}")
        if s.done:
            raise DirectorError("transfer ended without a chunk assembly needs")
        reqs = s.next_requests()
        if reqs:
            self.sock.send_multipart(make("CHUNK_REQ", job_id=self.job_id,
                                          chunks=[[f, c] for f, c in reqs]))
        now = time.monotonic()
        left = self.deadline - now
        if left <= 0:
            raise DirectorError(f"transfer timed out after {self.timeout:g} s")
        if self.copier.stopping.is_set():
            raise DirectorError("the node agent is stopping")
        if not self.sock.poll(int(min(left, 1.0) * 1000)):  # 1 s slices: notice a stop
            if time.monotonic() - self.last_heard >= CHUNK_TIMEOUT:
                s.on_timeout()
                self.last_heard = time.monotonic()
            return
        self.last_heard = time.monotonic()
        msg = decode(self.sock.recv_multipart(copy=True))
        if msg.get("job_id") != self.job_id:
            return
        f, c = msg.get("file"), msg.get("chunk")
        if msg.type == "CHUNK_ERR":
            s.on_error(f, c, msg.get("error"))
            return
        if msg.type != "CHUNK" or len(msg.payload) != 1:
            raise ProtocolError("expected one CHUNK payload")
        data = msg.payload[0]
        if s.on_chunk(f, c, data):
            self.arrived[(f, c)] = data
