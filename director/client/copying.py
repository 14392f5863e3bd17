"""COPY/ADD on the node: plan against what is here, pull only missing chunks.

Runs in a job worker thread with its own CURVE connection to the server (the
same node key, so the same identity); chunk answers go back to the connection
that asked.  Only chunks of the manifest this job was sent can be asked for.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from director.errors import DirectorError, ProtocolError
from director.jobs.dsl import Instruction
from director.jobs.executor import Outcome
from director.net import transport
from director.protocol.frames import decode, make
from director.transfer.chunking import Manifest
from director.transfer.session import PullSession
from director.transfer.store import (ContentStore, StatCache, apply_attrs, assemble,
                                     cleanup_temp_files, create_dirs, plan_transfer)

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

    def sockets(self) -> list:
        return []

    def on_message(self, msg: Any) -> None: ...
    def on_events(self, events: dict) -> None: ...

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
            pulled = self._pull(job_id, needed, expected, manifest, instr.options.timeout)
            dirs = sorted({str(p.target.parent) for p in plans if not p.unchanged})
            self.inflight_file.write_text(json.dumps(dirs))
            for p in plans:
                if not p.unchanged:
                    assemble(manifest.files[p.index], p.target, manifest.chunk_size,
                             self.store, self.stats)
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

    def _pull(self, job_id: str, needed: list, expected: dict, manifest: Manifest,
              timeout: float):
        session = PullSession(needed, lambda f, c: expected[(f, c)], window=WINDOW)
        if not needed:
            return session.stats
        agent = self.agent
        ctx = agent.ctx
        sock = transport.client_socket(ctx, agent.pair, agent.server_key, agent.endpoint,
                                       agent.settings.heartbeat_interval)
        deadline = time.monotonic() + timeout
        try:
            while not session.done:
                if session.failed:
                    raise DirectorError(f"transfer failed: {session.failed}")
                reqs = session.next_requests()
                if reqs:
                    sock.send_multipart(make("CHUNK_REQ", job_id=job_id,
                                             chunks=[[f, c] for f, c in reqs]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DirectorError(f"transfer timed out after {timeout:g} s")
                if not sock.poll(int(min(left, CHUNK_TIMEOUT) * 1000)):
                    session.on_timeout()
                    continue
                msg = decode(sock.recv_multipart(copy=True))
                if msg.get("job_id") != job_id:
                    continue
                f, c = msg.get("file"), msg.get("chunk")
                if msg.type == "CHUNK_ERR":
                    session.on_error(f, c, msg.get("error"))
                    continue
                if msg.type != "CHUNK" or len(msg.payload) != 1:
                    raise ProtocolError("expected one CHUNK payload")
                data = msg.payload[0]
                if session.on_chunk(f, c, data):
                    self.store.put(expected[(f, c)], data, verified=True)
            if session.failed:
                raise DirectorError(f"transfer failed: {session.failed}")
            return session.stats
        finally:
            sock.close(0)
