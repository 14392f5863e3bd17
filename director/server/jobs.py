"""Server-side jobs: submission, dispatch to nodes, results, waiting operators.

Identity rules from the design: a result is accepted only from the node the
job was sent to (the authenticated key), only while it is in flight, and only
once.  A node that vanishes ends its jobs as ``lost``, never as success.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from director.errors import DirectorError, ProtocolError
from director.jobs.dsl import Instruction
from director.jobs.targets import match_targets
from director.protocol.frames import MAX_BATCH, Message, batch, make, unbatch
from director.server.jobstore import JobStore, dumps
from director.server.scheduler import FINAL, Scheduler, Task
from director.server.waiters import Waiter
from director.server.manifests import ManifestBuilder, copy_jobs

if TYPE_CHECKING:
    from director.server.daemon import Server

log = logging.getLogger("director.jobs")
MAX_OUT = 1024 * 1024
GRACE = 30.0
PROGRESS_EVERY = 0.2
BATCH_BYTES = 1024 * 1024  # a JOBS message grows to about this much, then another starts


class JobManager:
    def __init__(self, server: Server):
        self.server = server
        self.store = JobStore(server.db.conn)
        self.sched = Scheduler(window=64)
        self.bodies: dict[str, bytes] = {}         # job id -> encoded JOB body
        self.orch_of: dict[str, str] = {}          # job id -> orchestration id
        self.open: dict[str, int] = {}             # job id -> tasks not yet final
        self.dirty: dict[tuple[str, str], dict[str, Any]] = {}
        self.waiters: dict[str, Waiter] = {}       # orchestration id -> waiter
        self.to_pump: set[str] = set()
        self.copies: dict[str, tuple[Any, tuple, set]] = {}  # job id -> (manifest, paths,
        #                                                        chunks verified)
        self.builder = ManifestBuilder(server.settings.chunk_size)
        self._reload()

    # -- submission ---------------------------------------------------------------
    def submit(self, rid: bytes, args: dict) -> Any:
        """Check and queue a submission; with COPY jobs, after their manifests exist."""
        from director.server.daemon import DEFERRED

        copies = copy_jobs(args.get("steps"))
        if not copies:
            return self._submit(rid, args, {})
        self.builder.start(rid, args, copies)
        return DEFERRED

    def on_manifests(self) -> None:
        """Finish submissions whose manifests are built (called by the event loop)."""
        from director.server.daemon import DEFERRED

        for r in self.builder.ready():
            try:
                if r.error is not None:
                    raise r.error
                result = self._submit(r.rid, r.args, r.built or {})
            except DirectorError as exc:
                self.server.reply(r.rid, ok=False, error=str(exc), code=exc.exit_code)
                continue
            if result is not DEFERRED:
                self.server.reply(r.rid, ok=True, result=result)

    def _submit(self, rid: bytes, args: dict, built: dict) -> Any:
        from director.server.daemon import DEFERRED

        steps = args.get("steps")
        if not isinstance(steps, list) or not steps:
            raise DirectorError("nothing to run: no jobs given")
        cli_targets = _str_list(args.get("targets", []), "targets")
        accepted = {r.name: r.key for r in self.server.db.nodes() if r.state == "accepted"}
        online = [n for n, k in accepted.items() if self.server.online(k)]
        now = time.time()
        orch = _new_id()
        jobs, rows, tasks = [], [], []
        bodies: dict[str, bytes] = {}
        copies: dict[str, tuple] = {}
        open_counts: dict[str, int] = {}
        lane_no = 0
        seq = 0
        step_targets: list[str] | None = None   # the last target list, and its JSON
        targets_json = ""
        sync_lane = f"{orch}.0"
        for si, step in enumerate(steps):
            if not isinstance(step, dict):
                raise DirectorError("malformed submission")
            names = match_targets(_str_list(step.get("targets") or cli_targets, "targets"),
                                  accepted, online)
            if step.get("async"):
                lane_no += 1
                lane = f"{orch}.{lane_no}"
            else:
                lane = sync_lane
            for ji, raw in enumerate(step.get("jobs") or []):
                try:
                    instr = Instruction.from_dict(raw)
                except ProtocolError as exc:
                    raise DirectorError(f"malformed job: {exc}") from None
                seq += 1
                job_id = f"{orch}{seq:04x}" if len(steps) > 1 or len(step.get("jobs")) > 1 else orch
                extra: dict[str, Any] = {}
                if instr.verb in ("COPY", "ADD"):
                    manifest, paths, vouched = built[(si, ji)]
                    copies[job_id] = (manifest, paths, set(vouched))
                    extra = {"manifest": manifest.to_dict(), "hash_extra": manifest.digest()}
                chosen = names
                if instr.options.run_once:
                    up = [n for n in names if n in online]
                    chosen = (up or names)[:1]
                instruction = dumps(instr.to_dict())
                if step_targets is not chosen:
                    step_targets, targets_json = chosen, dumps(chosen)
                jobs.append({"id": job_id, "orch": orch, "lane": lane, "seq": seq,
                             "verb": instr.verb, "summary": instr.describe(200),
                             "instruction": instruction,
                             "hash_extra": extra.get("hash_extra", ""),
                             "created": now, "targets": targets_json})
                if extra:
                    bodies[job_id] = make("JOB", job_id=job_id, instruction=instr.to_dict(),
                                          lane=lane, seq=seq, **extra)[2]
                else:  # the common case, assembled from the JSON just made (ids are hex)
                    bodies[job_id] = (f'{{"job_id":"{job_id}","instruction":{instruction},'
                                      f'"lane":"{lane}","seq":{seq}}}').encode()
                open_counts[job_id] = len(chosen)
                for name in chosen:
                    rows.append((job_id, accepted[name], name, "queued"))
                    tasks.append(Task(job_id, accepted[name], lane, seq,
                                      instr.options.timeout, queued_at=now))
        if not jobs:
            raise DirectorError("nothing to run: no jobs given")
        if seq > 100000:
            raise DirectorError("too many jobs in one submission (at most 100000)")
        self.store.insert(jobs, rows)
        # only now, with nothing left to refuse, does the submission touch live state
        self.bodies.update(bodies)
        self.copies.update(copies)
        self.open.update(open_counts)
        self.orch_of.update(dict.fromkeys(open_counts, orch))
        for t in tasks:
            self.sched.add(t)
            self.to_pump.add(t.node)
        ids = [j["id"] for j in jobs]
        log.info("orchestration %s: %d job(s), %d task(s)", orch, len(ids), len(tasks))
        if args.get("wait"):
            names = {accepted[n]: n for n in accepted}
            self.waiters[orch] = Waiter(rid, jobs, names, len(tasks), open_counts)
            self.server.event(rid, "submitted", {"orch": orch, "jobs": ids, "tasks": len(tasks)})
            self.pump()
            return DEFERRED
        self.pump()
        return {"orch": orch, "jobs": ids, "tasks": len(tasks)}

    # -- dispatch -------------------------------------------------------------------
    def pump(self) -> None:
        now = time.time()
        for node in self.to_pump:
            if self.server.online(node):
                tasks = self.sched.take(node, now)
                if tasks:
                    self._send_jobs(node, tasks, now)
        self.to_pump.clear()

    def _send_jobs(self, node: str, tasks: list[Task], now: float | None) -> None:
        """Send tasks to a node, several per message; ``now`` marks them running
        (None: a resend of tasks already running there)."""
        i = 0
        while i < len(tasks):
            group, size = [], 0
            while i < len(tasks) and len(group) < MAX_BATCH and (not group or size < BATCH_BYTES):
                body = self.bodies.get(tasks[i].job_id)
                if body is not None:
                    group.append((tasks[i], body))
                    size += len(body)
                i += 1
            if not group:
                continue
            if self.server.send_node(node, batch("JOBS", [b for _, b in group])):
                if now is not None:
                    for task, _ in group:
                        self._mark(task, {"status": "running", "sent": now})
                continue
            if now is None:
                continue  # a resend that failed: the tasks stay in flight until overdue
            for task, _ in group:
                if self.sched.complete(node, task.job_id, "lost") is not None:
                    self._final(task, {"status": "lost", "error": "could not reach the node"})

    def after_events(self) -> None:
        if self.to_pump:
            self.pump()
        self._progress(force=False)

    def node_ready(self, key: str) -> None:
        if self.sched.has_work(key):
            self.to_pump.add(key)

    def node_lost(self, key: str) -> None:
        for task in self.sched.drop_node(key, "lost"):
            self._final(task, {"status": "lost", "error": "the node went away"})

    def resend_inflight(self, key: str) -> None:
        self._send_jobs(key, self.sched.inflight(key), None)

    def node_restarted(self, key: str) -> None:
        for task in self.sched.fail_inflight(key, "lost"):
            self._final(task, {"status": "lost", "error": "the node restarted while running it"})
            for t in self.sched.cancel_lane(key, task.lane):
                self._final(t, {"status": "cancelled", "error": "an earlier job was lost"})
        self.to_pump.add(key)

    # -- results --------------------------------------------------------------------
    def on_message(self, key: str, msg: Message) -> None:
        if msg.type == "RESULT":
            self._on_result(key, msg)
        elif msg.type == "RESULTS":
            good, bad = unbatch(msg)
            for m in good:
                self._on_result(key, m)
            if bad:
                log.warning("%d bad result(s) from %s: %s", len(bad), self.server._who(key),
                            bad[0])

    def _on_result(self, key: str, msg: Message) -> None:
        job_id, status = msg.get("job_id"), msg.get("status")
        if status not in FINAL - {"lost"}:
            log.warning("result with bad status from %s", self.server._who(key))
            return
        task = self.sched.complete(key, job_id, status)
        if task is None:  # not sent to this key, or already answered: refuse
            log.warning("refused result for job %s from %s (not in flight there)",
                        str(job_id)[:32], self.server._who(key))
            return
        now = time.time()
        transfer = msg.get("transfer")
        self._final(task, {
            "status": status, "rc": msg.get("rc"), "stdout": _cap(msg.get("stdout", "")),
            "stderr": _cap(msg.get("stderr", "")), "cached": int(bool(msg.get("cached"))),
            "exec_time": msg.get("exec_time"), "error": _cap(msg.get("error", ""), 4096),
            "roundtrip_time": now - task.sent_at if task.sent_at else None,
            "transfer": dumps(transfer) if isinstance(transfer, dict) else None,
        })
        if status != "success":
            for t in self.sched.cancel_lane(key, task.lane):
                self._final(t, {"status": "cancelled", "error": "an earlier job failed"})
        self.to_pump.add(key)

    def _mark(self, task: Task, fields: dict[str, Any]) -> None:
        row = self.dirty.setdefault((task.job_id, task.node), _blank(task))
        row.update(fields)

    def _final(self, task: Task, fields: dict[str, Any]) -> None:
        fields.setdefault("finished", time.time())
        self._mark(task, fields)
        orch = self.orch_of.get(task.job_id, "")
        left = self.open.get(task.job_id, 1) - 1
        if left <= 0:  # every node answered: the encoded job is no longer needed
            self.open.pop(task.job_id, None)
            self.bodies.pop(task.job_id, None)
            self.orch_of.pop(task.job_id, None)
            self.copies.pop(task.job_id, None)
        else:
            self.open[task.job_id] = left
        w = self.waiters.get(orch)
        if w is not None and w.add(task.node, self.dirty[(task.job_id, task.node)]):
            del self.waiters[orch]
            self.server.reply(w.rid, payload=(w.payload(),), ok=True, result_json=True,
                              failed=w.failed)

    # -- waiting operators ------------------------------------------------------------
    def _progress(self, force: bool) -> None:
        now = time.monotonic()
        for w in self.waiters.values():
            if force or now - w.last_event >= PROGRESS_EVERY:
                w.last_event = now
                self.server.event(w.rid, "progress", w.progress())

    def tick(self, now: float) -> None:
        self.flush()
        expiry = self.server.settings.node_expiry
        for node in self.sched.nodes():
            since = self.sched.queued_since(node)
            if since is not None and not self.server.online(node) and now - since > expiry:
                self.node_lost(node)
        for task in self.sched.overdue(now, GRACE):
            self._final(task, {"status": "lost", "error": "no answer from the node"})
        self._progress(force=True)

    def flush(self) -> None:
        if self.dirty:
            rows, self.dirty = list(self.dirty.values()), {}
            self.store.update_results(rows)

    def _reload(self) -> None:
        """After a restart: queued and in-flight results continue where they were."""
        lost = []
        for r in self.store.open_results():
            instr = Instruction.from_dict(json.loads(r["instruction"]))
            if instr.verb in ("COPY", "ADD"):  # its manifest died with the old process
                lost.append({**_blank(Task(r["job_id"], r["node"], r["lane"], r["seq"], 0)),
                             "status": "lost", "error": "the server restarted during the transfer",
                             "finished": time.time()})
                continue
            self.bodies[r["job_id"]] = make("JOB", job_id=r["job_id"], instruction=instr.to_dict(),
                                            lane=r["lane"], seq=r["seq"])[2]
            self.orch_of[r["job_id"]] = r["orch"]
            self.open[r["job_id"]] = self.open.get(r["job_id"], 0) + 1
            self.sched.add(Task(r["job_id"], r["node"], r["lane"], r["seq"],
                                instr.options.timeout, status=r["status"],
                                queued_at=time.time(), sent_at=r["sent"] or time.time()))
        self.store.update_results(lost)

    # -- transfers ----------------------------------------------------------------------
    def on_chunk_req(self, key: str, rid: bytes, msg: Message) -> None:
        from director.server.chunkserve import serve_chunks

        serve_chunks(self, key, rid, msg)

    # -- queries ------------------------------------------------------------------------
    def docs(self, job_ids: list[str]) -> list[dict]:
        from director.server.jobviews import job_doc

        results = self.store.results(job_ids)
        rows = {r["id"]: r for r in self.store.conn.execute(
            f"SELECT * FROM jobs WHERE id IN ({','.join('?' * len(job_ids))})", job_ids)}
        return [job_doc(rows[j], results[j]) for j in job_ids if j in rows]

    def ops(self) -> dict:
        from director.server.jobviews import list_op

        def get(rid: bytes, args: dict) -> dict:
            self.flush()
            row = self.store.job(str(args.get("id", "")))
            if row is None:
                raise DirectorError(f"no job '{args.get('id')}' (see: director jobs)")
            return self.docs([row["id"]])[0]

        def jobs_list(rid: bytes, args: dict) -> list:
            self.flush()
            return list_op(self.store, args)

        return {"jobs.submit": self.submit, "jobs.get": get, "jobs.list": jobs_list}


def _blank(task: Task) -> dict[str, Any]:
    return {"job_id": task.job_id, "node": task.node, "status": task.status, "rc": None,
            "stdout": "", "stderr": "", "cached": 0, "exec_time": None,
            "roundtrip_time": None, "transfer": None, "error": "", "sent": task.sent_at,
            "finished": None}


def _cap(text: Any, limit: int = MAX_OUT) -> str:
    text = text if isinstance(text, str) else ""
    return text if len(text) <= limit else text[:limit] + "\n[... truncated by server]"


def _str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DirectorError(f"{what} must be a list of names or globs")
    return value


def _new_id() -> str:
    return secrets.token_hex(4)
