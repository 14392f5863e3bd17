"""The COPY driver: COPY/ADD on the node, planned against what is here,
pulling only missing chunks.

Copies block on disk and network, so they run on a small thread pool and
report back to the agent's event loop through a wake-up pipe (``handle``
returns the ended ones).  Each pull has its own CURVE connection to the
server (the same node key, so the same identity, made by the ``connect``
factory the agent passes in); chunk answers go back to the connection that
asked.  Which chunks to ask for, and when a chunk is bad or late, is the pure
``PullSession``'s decision; only chunks of this job's manifest can be asked for.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from director.client.sending import Sender
from director.jobs import verbs
from director.jobs.nodestate import JobCache, NodeState
from director.jobs.scopes import state_for
from director.errors import DirectorError, ProtocolError
from director.jobs.dsl import Instruction
from director.jobs.executor import Outcome, execute
from director.protocol import messages as M
from director.transfer.manifest import Manifest
from director.transfer.session import PullSession
from director.transfer.store import (ContentStore, StatCache, apply_attrs, assemble,
                                     chunk_source, cleanup_temp_files, create_dirs,
                                     harvest_temp_files, plan_transfer)

log = logging.getLogger("director.copy")
WINDOW = 8
CHUNK_TIMEOUT = 15.0
COPY_WORKERS = 4


class CopyDriver:
    """Runs COPY jobs on worker threads; ``handle`` gives ``(job_id, Outcome)`` of ended ones."""

    def __init__(self, home: Path, state: NodeState, cache: JobCache, watcher: Any,
                 connect: Callable[[], Any], facts: dict[str, Any] | None = None):
        self.state, self.cache, self.watcher = state, cache, watcher
        self.facts = facts or {}  # this node's facts: an ADD --blueprint file sees them
        self.copier = Copier(home, connect)
        self.sender = Sender(connect, self.copier)  # GET: files to the server
        self.pool = ThreadPoolExecutor(max_workers=COPY_WORKERS, thread_name_prefix="copy")
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        watcher.watch(self.wake_r)

    def start(self, job: M.Job) -> None:
        self.pool.submit(self._copy, job)

    def _scope(self, job: M.Job) -> dict[str, Any]:
        """Values from nodes a blueprint renders with (data, never templates)."""
        scope: dict[str, Any] = {"facts": self.facts}
        if job.query is not None:
            scope["query"] = job.query
        return scope

    def stop(self, job_id: str) -> None:
        """The operator cancelled ``job_id``: its transfer gives up at the next chunk
        (its temp files are removed; chunks already written are kept for a retry)."""
        self.copier.cancelled.add(job_id)

    def _copy(self, job: M.Job) -> None:
        if verbs.spec(job.instruction.verb).sends:
            def run(res: Any, wd: str) -> Outcome:
                return self.sender.run(job.job_id, res, wd)
        else:
            def run(res: Any, wd: str) -> Outcome:
                return self.copier.run(job.job_id, res, wd, job.manifest)
        try:
            out = execute(job.instruction, state_for(self.state, job.lane), self.cache,
                          hash_extra=job.hash_extra, copier=run,
                          scope=self._scope(job))
        except Exception as exc:  # noqa: BLE001 - a job must never take the agent down
            log.error("job %s crashed: %s: %s", job.job_id, type(exc).__name__, exc,
                      exc_info=exc)
            out = Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}")
        self.copier.cancelled.discard(job.job_id)
        self.done.put((job.job_id, out))
        try:
            os.write(self.wake_w, b"x")
        except OSError:  # the pipe is full (the loop wakes anyway) or closed (stopping)
            pass

    def handle(self, fds: Iterable[int]) -> list[tuple[str, Outcome]]:
        """COPY jobs that ended, once the event loop saw the wake-up pipe."""
        if self.wake_r not in fds:
            return []
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass
        ended = []
        while True:
            try:
                ended.append(self.done.get_nowait())
            except queue.Empty:
                return ended

    def close(self) -> bool:
        """Stop: transfers give up at once; True when every worker has finished."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.copier.stopping.set()
        deadline = time.monotonic() + 3.0
        threads = list(getattr(self.pool, "_threads", ()))
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        clean = not any(t.is_alive() for t in threads)
        if clean:  # a worker still running may still use them
            self.copier.close()
            self.watcher.unwatch(self.wake_r)
            os.close(self.wake_r)
            os.close(self.wake_w)
        return clean


class Copier:
    """The node's transfer state (content store, stat cache) and one pull per COPY."""

    def __init__(self, home: Path, connect: Callable[[], Any]):
        self.connect = connect
        root = Path(home) / "transfer"
        root.mkdir(mode=0o700, exist_ok=True)
        self.store = ContentStore(root / "chunks")
        self.stats = StatCache(root / "statcache.db")
        self.inflight_file = root / "inflight.json"
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # set by the agent: transfers give up at once
        self.cancelled: set[str] = set()   # jobs the operator cancelled (set by the loop)
        self._clean_previous()

    def _clean_previous(self) -> None:
        """Remove temp files a transfer cut short by a crash or restart left behind."""
        try:
            doc = json.loads(self.inflight_file.read_text())
        except (OSError, ValueError):
            return
        if isinstance(doc, dict):  # {"dirs": [...], "chunk_size": N}; a list is older
            dirs, chunk_size = doc.get("dirs") or [], doc.get("chunk_size")
        else:
            dirs, chunk_size = doc if isinstance(doc, list) else [], None
        paths = [Path(d) for d in dirs if isinstance(d, str)]
        if isinstance(chunk_size, int) and chunk_size > 0:
            # what the cut-short transfer had written is kept, so a retry pulls the rest
            kept = harvest_temp_files(paths, chunk_size, self.store)
            if kept:
                log.info("kept %d bytes of chunks from an interrupted transfer", kept)
        removed = cleanup_temp_files(paths)
        if removed:
            log.info("removed %d stale temp file(s) from an interrupted transfer", removed)
        self.inflight_file.unlink(missing_ok=True)

    def close(self) -> None:
        self.stats.close()

    # -- one COPY job (worker thread) -----------------------------------------------
    def run(self, job_id: str, instr: Instruction, workdir: str,
            manifest: Manifest | None) -> Outcome:
        start = time.perf_counter()
        if manifest is None:
            return Outcome("failed", error="bad manifest from server: it is missing")
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
            self.inflight_file.write_text(json.dumps({"dirs": dirs,
                                                      "chunk_size": manifest.chunk_size}))
            placed: dict[int, tuple[int, int]] = {}  # file index -> (device, inode) written
            with _Stream(self, job_id, needed, expected, keep, instr.options.timeout) as stream:
                for p in plans:
                    if not p.unchanged:
                        st = assemble(manifest.files[p.index], p.target, manifest.chunk_size,
                                      self.store, self.stats,
                                      source=chunk_source(p, manifest.chunk_size, self.store,
                                                          self.stats,
                                                          partial(stream.get, p.index)))
                        placed[p.index] = (st.st_dev, st.st_ino)
                pulled = stream.session.stats
            self.inflight_file.unlink(missing_ok=True)
            create_dirs(manifest)
            mode = int(instr.chmod, 8) if instr.chmod else None
            for p in plans:
                entry_mode = mode if mode is not None else manifest.files[p.index].mode
                apply_attrs(p.target, entry_mode, instr.chown, placed.get(p.index))
                self.stats.settle(p.target)  # our rename and chmod moved its ctime
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
        }  # the executor reads it as a dict (cached or not); the core bounds it
        return Outcome("success", rc=0, exec_time=time.perf_counter() - start,
                       transfer=transfer,  # ADD --blueprint renders the files it placed
                       placed=[str(p.target) for p in plans] if instr.flags else None)


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
            self.sock = copier.connect()

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
            self.sock.send_multipart(M.encode(M.ChunkReq(self.job_id, tuple(reqs))))
        now = time.monotonic()
        left = self.deadline - now
        if left <= 0:
            raise DirectorError(f"transfer timed out after {self.timeout:g} s")
        if self.copier.stopping.is_set():
            raise DirectorError("the node agent is stopping")
        if self.job_id in self.copier.cancelled:
            raise DirectorError("cancelled by the operator")
        if not self.sock.poll(int(min(left, 1.0) * 1000)):  # 1 s slices: notice a stop
            if time.monotonic() - self.last_heard >= CHUNK_TIMEOUT:
                s.on_timeout()
                self.last_heard = time.monotonic()
            return
        self.last_heard = time.monotonic()
        msg = M.decode(self.sock.recv_multipart(copy=True))
        cls = msg.__class__
        if cls is M.ChunkErr:
            if msg.job_id == self.job_id:
                if msg.file < 0:
                    raise DirectorError(f"the server refused the transfer: {msg.error}")
                s.on_error(msg.file, msg.chunk, msg.error)
            return
        if cls is not M.Chunk:
            raise ProtocolError(f"expected CHUNK, not {msg.TYPE}")
        if msg.job_id != self.job_id:
            return
        if s.on_chunk(msg.file, msg.chunk, msg.data):
            self.arrived[(msg.file, msg.chunk)] = msg.data
