"""Turning an operator's submission into job rows, tasks and encoded JOB bodies.

Pure: everything is decided and built before anything is stored or sent, so a
submission that is refused leaves no trace.  The operator's arguments are
checked here (they arrive as JSON from the control socket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from director.errors import DirectorError, ProtocolError
from director.jobs import verbs
from director.jobs.dsl import Instruction
from director.jobs.targets import NodeAttrs, is_selector, match_targets
from director.protocol.frames import dumps
from director.protocol.messages import Job, encode_body, job_body
from director.server.scheduler import Task

MAX_JOBS = 100_000   # jobs in one submission
MAX_LIVE_TASKS = 1_000_000  # tasks (jobs x nodes) queued or running at once, server-wide
ROW_RUN = 16         # jobs whose rows are laid out node by node (slices)


@dataclass
class Submission:
    orch: str
    jobs: list[dict[str, Any]] = field(default_factory=list)     # job rows
    bodies: dict[str, bytes] = field(default_factory=dict)       # job id -> JOB body
    copies: dict[str, tuple] = field(default_factory=dict)       # job id -> manifest etc.
    open_counts: dict[str, int] = field(default_factory=dict)    # job id -> tasks
    # job id, lane, seq, timeout, node names (one list shared by a step's jobs): the
    # tasks (jobs x nodes) are made from these a slice at a time (``slices``)
    fanout: list[tuple[str, str, int, float, list[str]]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)           # node name -> key
    ntasks: int = 0
    now: float = 0.0


def slices(sub: Submission, size: int) -> Iterator[tuple[list[tuple], list[Task]]]:
    """The submission's queued result rows and tasks, ``size`` at a time.  Jobs go in
    runs of up to ROW_RUN with the same targets, node by node within a run: a node's
    rows for them are stored side by side, so the two writes each of its results
    costs (sent, then answered) touch a page or two, not one page per job (at 100
    jobs x 2,000 nodes, 33 us of SQLite time per task against 15).  Every node's lanes
    still fill in job order."""
    rows: list[tuple] = []
    tasks: list[Task] = []
    keys, now = sub.keys, sub.now
    for run in _runs(sub.fanout):
        # in key order: each job's part of the (job, node) index then grows at one end
        # (in name order its pages were written all over: 6.5 us per task against 2.4)
        for name in sorted(run[0][4], key=keys.__getitem__):
            key = keys[name]
            for job_id, lane, seq, timeout, _ in run:
                rows.append((job_id, key, name, "queued"))
                tasks.append(Task(job_id, key, lane, seq, timeout, queued_at=now))
            if len(tasks) >= size:
                yield rows, tasks
                rows, tasks = [], []
    if tasks:
        yield rows, tasks


def _runs(fanout: list[tuple]) -> Iterator[list[tuple]]:
    """Consecutive jobs with the same targets, ROW_RUN at most in one run."""
    run: list[tuple] = []
    for job in fanout:
        if run and (len(run) >= ROW_RUN or (job[4] is not run[0][4]
                                            and job[4] != run[0][4])):
            yield run
            run = []
        run.append(job)
    if run:
        yield run


def copy_jobs(steps: Any) -> list[tuple[tuple[int, int], Instruction]]:
    """The COPY/ADD instructions of a submission, by (step, job) position."""
    out = []
    for si, step in enumerate(steps if isinstance(steps, list) else []):
        jobs = step.get("jobs") if isinstance(step, dict) else None
        for ji, raw in enumerate(jobs if isinstance(jobs, list) else []):
            verb = verbs.TABLE.get(raw.get("verb")) if isinstance(raw, dict) else None
            if verb is not None and verb.transfers:
                try:
                    out.append(((si, ji), Instruction.from_dict(raw)))
                except ProtocolError:
                    continue  # plan() reports malformed jobs itself
    return out


def plan(args: dict, built: dict, accepted: dict[str, str], online: list[str], now: float,
         orch: str, live: int = 0, cap: int = MAX_LIVE_TASKS,
         attrs: Callable[[], NodeAttrs] | None = None) -> Submission:
    """Every row, task and body of a submission; DirectorError if anything is wrong
    (among it: more than ``cap`` tasks live at once, ``live`` of them already).
    ``attrs`` gives the nodes' labels and facts, asked only if a target selects by them."""
    steps = args.get("steps")
    if not isinstance(steps, list) or not steps:
        raise DirectorError("nothing to run: no jobs given")
    cli_targets = str_list(args.get("targets", []), "targets")
    known: NodeAttrs | None = None
    stream = args.get("stream") is True and args.get("wait") is True  # to a waiting CLI
    sub = Submission(orch, keys=accepted, now=now)
    lane_no = seq = 0
    step_targets: list[str] | None = None   # the last target list, and its JSON
    targets_json = ""
    sync_lane = f"{orch}.0"
    for si, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("jobs") or [], list):
            raise DirectorError("malformed submission")
        patterns = str_list(step.get("targets") or cli_targets, "targets")
        if known is None and attrs is not None and any(map(is_selector, patterns)):
            known = attrs()
        names = match_targets(patterns, accepted, online, args.get("allow_offline") is True,
                              known)
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
            if seq > MAX_JOBS:
                raise DirectorError(f"too many jobs in one submission (at most {MAX_JOBS})")
            job_id = f"{orch}{seq:04x}" if len(steps) > 1 or len(step["jobs"]) > 1 else orch
            chosen = names
            if instr.options.run_once:
                up = [n for n in names if n in online]
                chosen = (up or names)[:1]
            instruction = dumps(instr.to_dict())
            hash_extra = ""
            if verbs.spec(instr.verb).transfers:
                if (si, ji) not in built:
                    raise DirectorError(f"{instr.verb} has no manifest (internal error)")
                manifest, paths, vouched = built[(si, ji)]
                sub.copies[job_id] = (manifest, paths, set(vouched))
                hash_extra = manifest.digest()
                sub.bodies[job_id] = encode_body(Job(job_id, instr, lane, seq, hash_extra,
                                                     manifest))
            else:  # the common case, assembled from the JSON just made
                sub.bodies[job_id] = job_body(job_id, instruction, lane, seq, stream)
            if step_targets is not chosen:
                step_targets, targets_json = chosen, dumps(chosen)
            sub.jobs.append({"id": job_id, "orch": orch, "lane": lane, "seq": seq,
                             "verb": instr.verb, "summary": instr.describe(200),
                             "instruction": instruction, "hash_extra": hash_extra,
                             "created": now, "targets": targets_json})
            sub.open_counts[job_id] = len(chosen)
            if live + sub.ntasks + len(chosen) > cap:
                raise DirectorError(
                    f"too many tasks at once: the server holds at most {cap:,} jobs x nodes"
                    f" queued or running ({live:,} now) and this submission has more than"
                    f" {max(cap - live, 0):,}; submit fewer jobs or targets, or wait")
            sub.fanout.append((job_id, lane, seq, instr.options.timeout, chosen))
            sub.ntasks += len(chosen)
    if not sub.jobs:
        raise DirectorError("nothing to run: no jobs given")
    return sub


def str_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DirectorError(f"{what} must be a list of names or globs")
    return value
