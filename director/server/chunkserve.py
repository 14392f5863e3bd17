"""Serving COPY chunks to nodes: only chunks of a manifest a node was sent, for a job
in flight there; the server never opens a path a node names."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from director.errors import DirectorError
from director.net.transport import send_to
from director.protocol.frames import Message, make
from director.transfer.chunking import read_chunk

if TYPE_CHECKING:
    from director.server.jobs import JobManager

log = logging.getLogger("director.jobs")


def serve_chunks(jobs: JobManager, key: str, rid: bytes, msg: Message) -> None:
    """Serve chunks of a manifest this node was sent, for a job in flight there."""
    job_id = msg.get("job_id")
    copy = jobs.copies.get(job_id)
    wanted = msg.get("chunks")
    if copy is None or not jobs.sched.in_flight(key, job_id) or len(wanted) > 64:
        log.warning("refused chunk request for job %s from %s", str(job_id)[:32],
                    jobs.server._who(key))
        return
    manifest, paths, verified = copy
    for item in wanted:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in item)
                or not 0 <= item[0] < len(manifest.files)):
            send_to(jobs.server.router, rid, make("CHUNK_ERR", job_id=job_id, file=-1,
                                                  chunk=-1, error="bad chunk request"))
            return
        f, c = item
        try:
            data = read_chunk(paths[f], manifest.files[f], c, manifest.chunk_size, verified)
        except DirectorError as exc:
            send_to(jobs.server.router, rid, make("CHUNK_ERR", job_id=job_id, file=f,
                                                  chunk=c, error=str(exc)))
            continue
        send_to(jobs.server.router, rid, make("CHUNK", (data,), job_id=job_id, file=f,
                                              chunk=c))
        w = jobs.waiters.get(jobs.orch_of.get(job_id, ""))
        if w is not None:
            w.bytes_sent += len(data)
