"""The documents ``--json`` prints, as typed values for Python callers (``director.api``).

Each is a ``dict`` -- exactly the JSON document, so ``json.dumps(doc)`` prints what
``--json`` prints -- whose fields can also be read as typed attributes
(``job.status``, ``job.results["web1"].rc``).  The server is local and trusted, but a
document of the wrong shape is still refused here with a ProtocolError, once, rather
than failing later as a KeyError deep in a caller.  Strings in them may come from
nodes: they are data (see ``director.cli.output.safe_text`` before printing them).
"""

from __future__ import annotations

from typing import Any

from director.errors import ProtocolError

__all__ = ["FINAL", "Doc", "Node", "NodeResult", "Job", "JobSummary", "Submission",
           "nodes_of", "job_summaries_of", "jobs_of"]

# statuses a job (or one node's task) ends in; queued and running are not final
FINAL = ("success", "failed", "timeout", "lost", "cancelled")


class Doc(dict):
    """A JSON object with the fields its kind needs checked once, on arrival."""

    KIND = "document"
    REQUIRED: tuple[str, ...] = ()

    def __init__(self, doc: Any):
        if not isinstance(doc, dict):
            raise ProtocolError(f"the server sent a {self.KIND} that is not a JSON object")
        missing = [k for k in self.REQUIRED if k not in doc]
        if missing:
            raise ProtocolError(f"the server sent a {self.KIND} without {', '.join(missing)}")
        super().__init__(doc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class Node(Doc):
    """One accepted node, as ``director nodes --json`` lists it."""

    KIND = "node"
    REQUIRED = ("name", "state")

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def state(self) -> str:
        """``online`` or ``offline``."""
        return self["state"]

    @property
    def online(self) -> bool:
        return self["state"] == "online"

    @property
    def last_seen(self) -> float | None:
        return self.get("last_seen")

    @property
    def address(self) -> str:
        return self.get("address") or ""

    @property
    def version(self) -> str:
        return self.get("version") or ""

    @property
    def fingerprint(self) -> str:
        return self.get("fingerprint") or ""

    @property
    def labels(self) -> dict[str, str]:
        """The operator's labels (``director nodes label``); {} from an older server."""
        return self.get("labels") or {}


class NodeResult(Doc):
    """A job's result on one node (``results[NODE]`` of ``job --json``)."""

    KIND = "node result"
    REQUIRED = ("status",)

    @property
    def status(self) -> str:
        return self["status"]

    @property
    def ok(self) -> bool:
        return self["status"] == "success"

    @property
    def rc(self) -> int | None:
        return self.get("rc")

    @property
    def stdout(self) -> str:
        return self.get("stdout") or ""

    @property
    def stderr(self) -> str:
        return self.get("stderr") or ""

    @property
    def error(self) -> str:
        return self.get("error") or ""

    @property
    def cached(self) -> bool:
        return bool(self.get("cached"))

    @property
    def exec_time(self) -> float | None:
        return self.get("exec_time")

    @property
    def roundtrip_time(self) -> float | None:
        return self.get("roundtrip_time")

    @property
    def transfer(self) -> dict[str, Any] | None:
        """COPY only: files, bytes_total, bytes_sent, chunks_sent, chunks_reused, skipped."""
        return self.get("transfer")


class _JobFields(Doc):
    @property
    def id(self) -> str:
        return self["id"]

    @property
    def status(self) -> str:
        """One of queued, running, success, failed, timeout, lost, cancelled."""
        return self["status"]

    @property
    def ok(self) -> bool:
        return self["status"] == "success"

    @property
    def done(self) -> bool:
        """True once every targeted node has a final status."""
        return self["status"] in FINAL

    @property
    def orchestration(self) -> str:
        return self.get("orchestration") or ""

    @property
    def verb(self) -> str:
        return self.get("verb") or ""

    @property
    def summary(self) -> str:
        return self.get("summary") or ""

    @property
    def targets(self) -> list[str]:
        return self.get("targets") or []

    @property
    def counts(self) -> dict[str, int]:
        """How many nodes are in each status."""
        return self.get("counts") or {}

    @property
    def created(self) -> float | None:
        return self.get("created")


class Job(_JobFields):
    """One job with its result on each node, as ``director job ID --json`` prints it."""

    KIND = "job"
    REQUIRED = ("id", "status", "results")

    def __init__(self, doc: Any):
        super().__init__(doc)
        results = self["results"]
        if not isinstance(results, dict):
            raise ProtocolError("the server sent a job whose results are not a JSON object")
        self["results"] = {name: NodeResult(r) for name, r in results.items()}

    @property
    def results(self) -> dict[str, NodeResult]:
        """Node name -> that node's result."""
        return self["results"]

    @property
    def instruction(self) -> dict[str, Any]:
        return self.get("instruction") or {}


class JobSummary(_JobFields):
    """One line of ``director jobs --json``: a job without its results, with its age."""

    KIND = "job summary"
    REQUIRED = ("id", "status")

    @property
    def age(self) -> float:
        """Seconds since the job was submitted (when the server answered)."""
        return self.get("age") or 0.0


class Submission(Doc):
    """What a submission without waiting answers: ``exec --json`` without ``--wait``."""

    KIND = "submission"
    REQUIRED = ("orch", "jobs")

    def __init__(self, doc: Any):
        super().__init__(doc)
        if not (isinstance(self["jobs"], list) and all(isinstance(j, str) for j in self["jobs"])):
            raise ProtocolError("the server sent a submission whose job ids are not strings")

    @property
    def orchestration(self) -> str:
        """The orchestration id: every job of one submission shares it."""
        return self["orch"]

    @property
    def jobs(self) -> list[str]:
        """The job ids, in submission order."""
        return self["jobs"]

    @property
    def tasks(self) -> int:
        """Job x node pairs queued."""
        return self.get("tasks") or 0


def _list_of(kind: type[Doc], docs: Any, what: str) -> list:
    if not isinstance(docs, list):
        raise ProtocolError(f"the server sent {what} that is not a JSON list")
    return [kind(d) for d in docs]


def nodes_of(docs: Any) -> list[Node]:
    return _list_of(Node, docs, "a node list")


def job_summaries_of(docs: Any) -> list[JobSummary]:
    return _list_of(JobSummary, docs, "a job list")


def jobs_of(docs: Any) -> list[Job]:
    return _list_of(Job, docs, "a job list")
