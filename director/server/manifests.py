"""COPY manifests are built off the event loop.

Hashing a large new source takes seconds (BLAKE2b at ~1 GB/s); done on the
server's one event-loop thread it would stall every node's heartbeats for
that long -- long enough, for big first deploys, to declare them all offline.
A thread builds the manifests; the loop picks the result up through a pipe it
polls, and only then is the submission committed and answered.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from director.errors import DirectorError
from director.jobs.dsl import Instruction
from director.transfer.chunking import DigestCache, Manifest, build_manifest, vouched_chunks

# (step, job) -> (manifest, local path of each file, read_chunk keys vouched for)
Built = dict[tuple[int, int], tuple[Manifest, tuple[Path, ...], set]]


@dataclass
class Ready:
    ticket: int
    built: Built | None
    error: str | None


class ManifestBuilder:
    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size
        self.digests = DigestCache()
        self.done: queue.SimpleQueue[Ready] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)

    def start(self, ticket: int, base: Any,
              copies: list[tuple[tuple[int, int], Instruction]]) -> None:
        threading.Thread(target=self._build, args=(ticket, base, copies), daemon=True,
                         name="manifest").start()

    def _build(self, ticket: int, base: Any,
               copies: list[tuple[tuple[int, int], Instruction]]) -> None:
        try:
            if not isinstance(base, str) or not base.startswith("/"):
                raise DirectorError("COPY needs the directory sources are relative to")
            built = {}
            for pos, i in copies:
                manifest, paths = build_manifest(list(i.sources), i.dest, base=Path(base),
                                                 chunk_size=self.chunk_size, cache=self.digests)
                built[pos] = (manifest, paths, vouched_chunks(manifest, paths, self.digests))
            self.done.put(Ready(ticket, built, None))
        except DirectorError as exc:
            self.done.put(Ready(ticket, None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported to the operator, server goes on
            self.done.put(Ready(ticket, None,
                                f"cannot build the COPY manifest: {type(exc).__name__}: {exc}"))
        os.write(self.wake_w, b"x")

    def ready(self) -> list[Ready]:
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        out = []
        while True:
            try:
                out.append(self.done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        os.close(self.wake_r)
        os.close(self.wake_w)
