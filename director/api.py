"""The Python API: what the ``director`` job commands do, for programs.

    from pathlib import Path
    from director.api import Client

    c = Client(home="/var/lib/director")        # the server's home (its control socket)
    for job in c.submit("RUN uptime", targets=["web*"], wait=True):
        for node, r in job.results.items():
            print(node, r.status, r.stdout.strip())
    sub = c.submit(Path("site.yaml"))            # an orchestration file; returns at once
    done = [c.wait(j) for j in sub.jobs]         # each ends success/failed/timeout/lost/...

Results are the documents ``--json`` prints (``director.documents``: dicts with typed
attributes); every error is a ``director.errors.DirectorError`` (``DSLError`` for a bad
job line or file -- nothing is sent then --, ``ConnectionFailed`` when no server answers).
The CLI's exec, orchestrate, job, jobs and nodes commands are built on this module.

It talks to the server in ``home`` over its local control socket, so it runs as the
server's user.  Imports stay small (no server, node protocol or DSL until a submission
needs it): ``director exec`` starts through here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from director.documents import (FINAL, Job, JobSummary, Node, Submission, job_summaries_of,
                                jobs_of, nodes_of)
from director.errors import ConnectionFailed, DirectorError

__all__ = ["Client", "EncodedResults", "Unsupported", "WaitTimedOut", "Job", "JobSummary",
           "Node", "Submission", "CANCEL_OP", "FINAL"]

CANCEL_OP = "jobs.cancel"   # the control operation ``cancel`` sends: {"id": ID}
FIRST_ANSWER = 15.0         # s until a waiting submission is acknowledged (COPY hashes first)
SILENT_AFTER_SUBMIT = 5.0   # s without progress that mean the server went away
JobsSpec = Union[str, Sequence[str], "os.PathLike[str]", Sequence["os.PathLike[str]"]]
OnEvent = Callable[[str, dict], None]


class Unsupported(DirectorError):
    """The server does not know the operation asked for (it is older than this client)."""


class WaitTimedOut(DirectorError):
    """``Client.wait`` gave up before the job ended (the job goes on)."""

    exit_code = 2


@dataclass(frozen=True)
class EncodedResults:
    """The server's answer to a waiting submission, still encoded: ``data`` is exactly the
    JSON ``exec --wait --json`` prints; ``failed`` counts jobs that did not succeed."""

    data: bytes
    failed: int


class Client:
    """The server whose home is ``home`` (default: ``--home``'s default and config:
    ``DIRECTOR_HOME``, the config file, then the built-in default)."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, timeout: float = 10.0):
        if home is None:
            from director.config import load_settings

            home = load_settings(cli={}, environ=os.environ, config_path=None).settings.home
        self.home = Path(home)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client(home={str(self.home)!r})"

    # -- plumbing ---------------------------------------------------------------------
    def _connect(self, timeout: float | None = None):
        from director.net.control import ControlClient

        return ControlClient(self.home, timeout=self.timeout if timeout is None else timeout)

    def request(self, op: str, args: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """One raw control request and its decoded answer (the other methods use this);
        a refusal raises DirectorError with the server's words and exit code."""
        with self._connect(timeout) as c:
            return c.call(op, args)

    # -- queries ----------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """Accepted nodes (``director nodes --json``)."""
        return nodes_of(self.request("nodes"))

    def jobs(self, limit: int = 20) -> list[JobSummary]:
        """The ``limit`` most recent jobs, newest first (``director jobs --json``)."""
        return job_summaries_of(self.request("jobs.list", {"limit": limit}))

    def job(self, job_id: str) -> Job:
        """One job and its result on each node (``director job ID --json``); ``job_id``
        may be ``last`` or a unique prefix of at least 4 characters."""
        return Job(self.request("jobs.get", {"id": job_id}))

    def show(self, job_id: str, *, every_job: bool = False) -> Any:
        """What ``director job ID --json`` prints: a Job; for an orchestration of several
        jobs (``last``: when the newest submission is one) its summary, a dict with
        ``kind: "orchestration"`` (per node counts, ``first_failure``, job ids); with
        ``every_job``, the list of its Jobs instead."""
        doc = self.request("jobs.get", {"id": job_id, "orchestration": True,
                                        "all": bool(every_job)})
        if isinstance(doc, list):
            return jobs_of(doc)
        if isinstance(doc, dict) and doc.get("kind") == "orchestration":
            return doc
        return Job(doc)

    def overview(self, limit: int = 20) -> list[dict[str, Any]]:
        """The ``limit`` newest entries of ``director jobs``: job summaries, and each
        orchestration of several jobs as one entry (``kind: "orchestration"``)."""
        return self.request("jobs.list", {"limit": limit, "grouped": True})

    def wait(self, job_id: str, timeout: float | None = None, interval: float = 0.5) -> Job:
        """The job once it has ended on every node it targets (polling ``job``).

        Raises WaitTimedOut after ``timeout`` seconds (None: no limit: the server ends
        every task within its own timeout); the job is not touched by giving up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.05
        while True:
            doc = self.job(job_id)
            if doc.done:
                return doc
            job_id = doc.id  # 'last' or a prefix: the same job from now on
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimedOut(f"job {doc.id} is still {doc.status} after {timeout:g} s")
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, interval)

    # -- changes ----------------------------------------------------------------------
    def submit(self, jobs: JobsSpec, targets: str | Sequence[str] = (), *, wait: bool = False,
               base: str | os.PathLike[str] | None = None,
               on_event: OnEvent | None = None, allow_offline: bool = False,
               stream: bool = False, batch: int | str | None = None,
               max_failures: int | str | None = None) -> Any:
        """Run jobs on the targets (default: every online node).

        ``jobs`` is a job line (``"RUN uptime"``; several lines run in order), a list of
        lines, an orchestration file as a ``pathlib.Path`` (Directorfile or YAML) or a
        list of them.  Everything is parsed first: a bad line raises DSLError and nothing
        is sent.  ``base`` is the directory relative COPY sources resolve against
        (default: the working directory).  A target not online is refused
        (DirectorError naming it) unless ``allow_offline``: its tasks then wait for it.
        ``stream`` (with ``wait``): ``on_event("output", {"node", "items": [[job_id,
        "out"|"err", text], ...]})`` sees the output as it is produced.
        ``batch`` (a count or ``"P%"``): that many targets at a time, the next batch once
        every task of the last is final; ``max_failures`` (with ``batch``): no batch
        starts once more targets failed than that (the rest end ``cancelled``).  Bad
        values raise ConfigError and nothing is sent.

        Without ``wait``: a Submission (orchestration id, job ids), at once.  With it: the
        list of Jobs once every node answered (check ``job.ok``); ``on_event(event,
        data)`` sees the server's ``submitted`` and ``progress`` events meanwhile."""
        payload = self._payload(jobs, targets, wait, base, allow_offline, batch,
                                max_failures)
        payload["stream"] = bool(stream and wait)
        if not wait:
            return Submission(self.request("jobs.submit", payload))
        import json

        raw = self._submit_waiting(payload, on_event)
        try:
            docs = json.loads(raw.data)
        except (ValueError, RecursionError):
            from director.errors import ProtocolError

            raise ProtocolError("the server's job results are not valid JSON") from None
        return jobs_of(docs)

    def plan(self, jobs: JobsSpec, targets: str | Sequence[str] = (), *,
             base: str | os.PathLike[str] | None = None,
             allow_offline: bool = False) -> dict[str, Any]:
        """A dry run of ``submit``: the server plans it the same way and answers with the
        plan per node (each job's content hash, what each COPY would send or change)
        instead of storing or sending anything (``--dry-run --json`` prints it)."""
        payload = self._payload(jobs, targets, False, base, allow_offline)
        return self.request("jobs.plan", payload, max(self.timeout, 60.0))

    def submit_encoded(self, jobs: JobsSpec, targets: str | Sequence[str] = (), *,
                       base: str | os.PathLike[str] | None = None,
                       on_event: OnEvent | None = None,
                       allow_offline: bool = False, stream: bool = False,
                       batch: int | str | None = None,
                       max_failures: int | str | None = None) -> EncodedResults:
        """``submit(..., wait=True)`` with the results left as the server encoded them,
        for passing on untouched (``exec --wait --json`` prints these bytes)."""
        payload = self._payload(jobs, targets, True, base, allow_offline, batch,
                                max_failures)
        payload["stream"] = bool(stream)
        return self._submit_waiting(payload, on_event)

    def retry(self, job_id: str, *, failed: bool = False, wait: bool = False,
              on_event: OnEvent | None = None, allow_offline: bool = False) -> Any:
        """The same job(s) again, as a new orchestration linked to the old one (its jobs
        show ``retry_of``): on the nodes where they did not succeed (``failed``) or on
        every node they ran on.  Returns what ``submit`` returns."""
        payload = {"id": job_id, "failed": failed, "wait": wait,
                   "allow_offline": bool(allow_offline)}
        if not wait:
            return Submission(self.request("jobs.retry", payload))
        import json

        raw = self._submit_waiting(payload, on_event, "jobs.retry")
        try:
            docs = json.loads(raw.data)
        except (ValueError, RecursionError):
            from director.errors import ProtocolError

            raise ProtocolError("the server's job results are not valid JSON") from None
        return jobs_of(docs)

    def cancel(self, job_id: str) -> Any:
        """Cancel a job (queued tasks end unsent, running ones are stopped): sends the
        ``jobs.cancel`` control operation with ``{"id": job_id}`` and returns the server's
        answer.  A server without that operation raises Unsupported (a DirectorError)."""
        try:
            return self.request(CANCEL_OP, {"id": job_id})
        except Unsupported:
            raise
        except DirectorError as exc:
            if str(exc).startswith("unknown control operation"):
                raise Unsupported(f"the director in {self.home} cannot cancel jobs (it has no"
                                  f" '{CANCEL_OP}' operation): upgrade it and restart it"
                                  ) from None
            raise

    def purge(self, older_than: float | None = None, keep: int | None = None, *,
              timeout: float = 600.0) -> dict[str, int]:
        """Delete finished jobs and their results now (``director jobs purge --json``):
        those older than ``older_than`` seconds and/or all but the newest ``keep``; with
        neither, as the server's ``job_retention`` settings say.  Jobs with tasks still
        queued or running are kept.  Returns ``{"jobs": N, "results": M}`` once done."""
        args: dict[str, Any] = {}
        if older_than is not None:
            args["older_than"] = older_than
        if keep is not None:
            args["keep"] = keep
        return self.request("jobs.purge", args, timeout)

    def analyze(self, job_id: str) -> dict[str, Any]:
        """Where the time of a job or an orchestration went (``director analyze ID
        --json``); ``last`` is the newest orchestration."""
        return self.request("jobs.analyze", {"id": job_id}, max(self.timeout, 60.0))

    # -- submission internals -----------------------------------------------------------
    def _payload(self, jobs: JobsSpec, targets: str | Sequence[str], wait: bool,
                 base: str | os.PathLike[str] | None, allow_offline: bool = False,
                 batch: int | str | None = None, max_failures: int | str | None = None
                 ) -> dict[str, Any]:
        rollout = {}
        if batch is not None or max_failures is not None:
            from director.batchsize import rollout_options

            rollout = rollout_options(batch, max_failures)  # checked before anything else
        steps = _server_dests(_steps(jobs), base)
        if isinstance(targets, str):
            targets = [targets]
        elif not all(isinstance(t, str) for t in targets):
            raise TypeError("targets must be a string or a list of strings")
        # comma lists (-t web1,web2); given targets override those written in a file
        targets = [t.strip() for given in targets for t in given.split(",") if t.strip()]
        return {"steps": [{"targets": [] if targets else list(s.targets), "async": s.async_,
                           "name": s.name,
                           "jobs": [j.to_dict() for j in s.jobs]} for s in steps],
                "targets": list(targets), "wait": wait, "allow_offline": bool(allow_offline),
                "label": _label(jobs),
                "base": os.path.abspath(base) if base is not None else os.getcwd(),
                **rollout}

    def _submit_waiting(self, payload: dict[str, Any], on_event: OnEvent | None,
                        op: str = "jobs.submit") -> EncodedResults:
        from director.net.control import result_of
        from director.protocol.control import CtlEvent, CtlPart, join_parts

        submitted: list[str] = []  # job ids, once the server took the work
        parts: list[bytes] = []    # the answer, in pieces as jobs finish
        with self._connect() as c:
            c.send(op, {**payload, "parts": True})
            while True:
                try:  # the server sends progress every 0.25 s once the work is submitted
                    msg = c.recv(SILENT_AFTER_SUBMIT if submitted else FIRST_ANSWER)
                except ConnectionFailed:
                    if not submitted:
                        raise
                    raise ConnectionFailed(
                        f"the server went away while the jobs ran (they go on once it is"
                        f" back); follow them with: director job {submitted[-1]}"
                        f" (all: director jobs)") from None
                if isinstance(msg, CtlPart):
                    parts.append(msg.data)
                    continue
                if isinstance(msg, CtlEvent):
                    data = msg.data if isinstance(msg.data, dict) else {}
                    if msg.event == "submitted":
                        ids = data.get("jobs")
                        submitted = [j for j in ids if isinstance(j, str)] \
                            if isinstance(ids, list) else []
                        submitted = submitted or ["last"]
                    if on_event is not None:
                        on_event(msg.event, data)
                    continue
                if msg.ok and msg.result_json:
                    return EncodedResults(join_parts(parts, msg.data), msg.failed or 0)
                result = result_of(msg)  # a refusal raises here
                import json

                docs = jobs_of(result)
                return EncodedResults(json.dumps(docs).encode(),
                                      sum(1 for d in docs if d.status != "success"))


def _steps(jobs: JobsSpec) -> list:
    """Parsed Steps from a job line, lines, a file or files (DSLError on any mistake)."""
    from director.jobs.files import load_orchestration, parse_job_text

    if isinstance(jobs, str):
        return parse_job_text(jobs)
    if isinstance(jobs, os.PathLike):
        return _rebased(load_orchestration(jobs), jobs)
    if isinstance(jobs, (list, tuple)):
        if all(isinstance(j, str) for j in jobs):
            return parse_job_text("\n".join(jobs))
        if all(isinstance(j, os.PathLike) for j in jobs):
            return [s for f in jobs for s in _rebased(load_orchestration(f), f)]
    raise TypeError("jobs must be a job line (str), a list of lines, an orchestration file"
                    " (pathlib.Path) or a list of files")



def _label(jobs: JobsSpec) -> str:
    """An orchestration's name in listings: its files' names."""
    files = [jobs] if isinstance(jobs, os.PathLike) else \
        [j for j in jobs if isinstance(j, os.PathLike)] if isinstance(jobs, (list, tuple)) else []
    return ", ".join(os.path.basename(os.fspath(f)) for f in files)


def _rebased(steps: list, path: os.PathLike) -> list:
    """COPY/ADD sources written in a file are relative to that file's directory (as in
    a Containerfile's build context), not to wherever the command was typed."""
    from dataclasses import replace

    from director.jobs import verbs

    here = os.path.dirname(os.path.abspath(path))

    def rebase(job):
        if verbs.spec(job.verb).sends:  # GET's DEST_DIR, like COPY's sources
            return replace(job, dest=os.path.join(here, job.dest))
        if not verbs.spec(job.verb).transfers or not job.sources:
            return job
        return replace(job, sources=tuple(src if os.path.isabs(src) else
                                          os.path.join(here, src) for src in job.sources))

    return [replace(s, jobs=tuple(rebase(j) for j in s.jobs)) for s in steps]


def _server_dests(steps: list, base: str | os.PathLike[str] | None) -> list:
    """GET's DEST_DIR is a directory on the server machine: a relative one is made
    absolute here, against ``base`` (default: the working directory)."""
    from dataclasses import replace

    from director.jobs import verbs

    if not any(verbs.spec(j.verb).sends for s in steps for j in s.jobs):
        return steps
    here = os.path.abspath(base) if base is not None else os.getcwd()

    def resolve(job):
        if not verbs.spec(job.verb).sends:
            return job
        return replace(job, dest=os.path.normpath(os.path.join(here, job.dest)))

    return [replace(s, jobs=tuple(resolve(j) for j in s.jobs)) for s in steps]
