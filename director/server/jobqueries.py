"""JobBook's answers to operators and nodes that change nothing in the stream: chunks of
a manifest, cancel and retry (cancel.py, retry.py), stats, documents and listings (a
mixin of JobBook; part of the core: no I/O)."""

from __future__ import annotations

import logging
from typing import Any

from director.errors import DirectorError
from director.protocol.messages import ChunkErr, ChunkReq, encode
from director.server.cancel import cancel
from director.server.events import ServeChunk, Send


class JobQueries:
    """Needs the book's ``copies``, ``sched``, ``lost_copies``, ``finals``, ``waiters``,
    ``orch_of``, ``store``, ``open``, ``dirty``, ``out``, ``peer_log``, ``name_of``,
    ``flush`` and ``submit``."""

    def serve_chunks(self, key: str, route: bytes, req: ChunkReq, now: float) -> None:
        """Chunks of a manifest this node was sent, for a job in flight there; the
        driver reads them (the server never opens a path a node names)."""
        copy = self.copies.get(req.job_id)
        if copy is None or not self.sched.in_flight(key, req.job_id):
            # a node the server gave up on (silent past its expiry) that is back and
            # still pulling proves it is alive: it may finish, and its result replaces
            # 'lost'; anything else is refused, with a word so it stops at once
            copy = self.lost_copies.get(req.job_id)
            if copy is None or self.finals.get((req.job_id, key)) is not True:
                self.peer_log(logging.WARNING, key, "foreign_chunks", now,
                              "refused chunk request for job %s from %s", req.job_id,
                              self.name_of(key))
                self.out.append(Send(route, encode(ChunkErr(
                    req.job_id, -1, -1, "this job is not in flight on this node"))))
                return
        manifest, paths, vouched = copy
        w = self.waiters.get(self.orch_of.get(req.job_id, ""))
        for f, c in dict.fromkeys(req.chunks):  # each chunk once per request
            if f >= len(manifest.files):
                self.out.append(Send(route, encode(ChunkErr(req.job_id, -1, -1,
                                                            "bad chunk request"))))
                return
            entry = manifest.files[f]
            self.out.append(ServeChunk(route, req.job_id, f, c, paths[f], entry,
                                       manifest.chunk_size, vouched))
            if w is not None and c * manifest.chunk_size < entry.size:
                w.bytes_sent += min(manifest.chunk_size, entry.size - c * manifest.chunk_size)

    def cancel(self, args: dict, now: float) -> dict:
        """``jobs.cancel`` (cancel.py); what it decided is written at once."""
        done = cancel(self, args, now)
        self.flush()
        return done

    # -- queries ------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"tasks_live": self.live_tasks(), "tasks_cap": self.max_live, "jobs_open": len(self.open),
                "results_unwritten": len(self.dirty), "waiters": len(self.waiters)}

    def docs(self, job_ids: list[str]) -> list[dict]:
        from director.server.jobviews import job_doc

        results = self.store.results(job_ids)
        rows = self.store.jobs_by_ids(job_ids)
        return [job_doc(rows[j], results[j]) for j in job_ids if j in rows]

    def get(self, args: dict) -> dict:
        self.flush()
        row = self.store.job(str(args.get("id", "")))
        if row is None:
            raise DirectorError(f"no job '{args.get('id')}' (see: director jobs)")
        doc = self.docs([row["id"]])[0]
        link = self.store.retry_of(row["orch"])
        if link:
            doc["retry_of"] = link
        return doc

    def retry(self, rid: bytes, args: dict, now: float) -> Any:
        """``jobs.retry`` (retry.py): a new submission, answered as one."""
        from director.server.retry import retry

        return retry(self, rid, args, now)

    def listing(self, args: dict, now: float) -> list:
        from director.server.jobviews import list_op

        self.flush()
        return list_op(self.store, args, now)
