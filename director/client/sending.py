"""GET on the node: offer the matched files to the server, send the chunks it asks for.

Runs on a COPY worker thread with its own CURVE connection (as a COPY pull does).
The node names its files relative to what it matched (COPY's rules: a file by its
base name, a directory by its contents); the server decides what it needs, checks
every chunk and whole file against the digests offered here, and writes them.  The
node only ever reads: each chunk is read again and checked against the offer, so
a file changed meanwhile fails the GET instead of sending mixed content.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from director.errors import DirectorError, ProtocolError
from director.jobs.executor import Outcome
from director.protocol import messages as M
from director.protocol.fetch import MAX_GET_FILES, GetData, GetDone, GetOffer, GetPull
from director.transfer.chunking import DigestCache, build_manifest, read_chunk
from director.transfer.manifest import DEFAULT_CHUNK_SIZE

SILENCE = 30.0   # s without a word from the server: it is gone


class Sender:
    """One GET per call of ``run``; ``copier`` gives the shared stop/cancel flags."""

    def __init__(self, connect: Callable[[], Any], copier: Any):
        self.connect = connect
        self.copier = copier
        self.digests = DigestCache(maxsize=10_000)

    def run(self, job_id: str, instr: Any, workdir: str) -> Outcome:
        start = time.perf_counter()

        def failed(error: str, transfer: dict | None = None) -> Outcome:
            return Outcome("failed", error=error, transfer=transfer,
                           exec_time=time.perf_counter() - start)
        try:
            manifest, paths = build_manifest(list(instr.sources), "./", base=Path(workdir),
                                             chunk_size=DEFAULT_CHUNK_SIZE, cache=self.digests)
        except DirectorError as exc:
            return failed(str(exc).replace("COPY", "GET"))
        if len(manifest.files) > MAX_GET_FILES:
            return failed(f"GET matched {len(manifest.files)} files; at most {MAX_GET_FILES}")
        sock = self.connect()
        try:
            done = self._send(sock, job_id, manifest, paths, instr.options.timeout)
        except DirectorError as exc:
            return failed(str(exc))
        finally:
            sock.close(0)
        transfer = dict(done.transfer)
        if not done.ok:
            return failed(f"GET: {done.error}", transfer)
        return Outcome("success", rc=0, transfer=transfer, exec_time=time.perf_counter() - start)

    def _send(self, sock: Any, job_id: str, manifest: Any, paths: tuple[Path, ...],
              timeout: float) -> GetDone:
        sock.send_multipart(M.encode(GetOffer(job_id, manifest.chunk_size, manifest.files)))
        deadline = time.monotonic() + timeout
        heard = time.monotonic()
        verified: set = set()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise DirectorError(f"GET timed out after {timeout:g} s")
            if now - heard >= SILENCE:
                raise DirectorError(f"GET: no word from the server for {SILENCE:g} s")
            if self.copier.stopping.is_set():
                raise DirectorError("the node agent is stopping")
            if job_id in self.copier.cancelled:
                raise DirectorError("cancelled by the operator")
            if not sock.poll(int(min(deadline - now, 1.0) * 1000)):
                continue
            heard = time.monotonic()
            msg = M.decode(sock.recv_multipart(copy=True))
            if msg.__class__ is M.Error:
                raise DirectorError(f"GET: the server refused: {msg.message}")
            if getattr(msg, "job_id", None) != job_id:
                continue
            if msg.__class__ is GetDone:
                return msg
            if msg.__class__ is not GetPull:
                raise ProtocolError(f"GET: expected GET_PULL or GET_DONE, not {msg.TYPE}")
            for f, c in msg.chunks:
                sock.send_multipart(M.encode(self._chunk(job_id, manifest, paths, f, c,
                                                         verified)))

    @staticmethod
    def _chunk(job_id: str, manifest: Any, paths: tuple[Path, ...], f: int, c: int,
               verified: set) -> GetData:
        if f >= len(manifest.files):
            return GetData(job_id, f, c, b"", "no such file in this GET")
        try:
            data = read_chunk(paths[f], manifest.files[f], c, manifest.chunk_size, verified)
        except DirectorError as exc:
            return GetData(job_id, f, c, b"", str(exc) or "read failed")
        return GetData(job_id, f, c, data)

