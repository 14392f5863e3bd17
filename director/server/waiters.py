"""Operators waiting on an orchestration (``--wait``): progress and the final answer.

Each job's document is built and encoded as soon as every node answered it, so
the reply after the last result is a join, not an encoding of everything while
the nodes sit idle.  The answer is one JSON payload frame, encoded exactly the
way ``--json`` prints it, so the CLI can pass it through untouched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from director.server.jobviews import job_doc

# what a job document shows of each result, kept as a tuple (not a copy of the row
# dict) until every node answered the job: a tenth of the memory per result
KEPT = ("name", "status", "rc", "stdout", "stderr", "cached", "exec_time",
        "roundtrip_time", "transfer", "error", "finished")


@dataclass
class Waiter:
    rid: bytes
    jobs: list[dict[str, Any]]            # job rows, as stored, in submission order
    names: dict[str, str]                 # node key -> name at submission
    remaining: int                        # tasks not final yet
    expect: dict[str, int]                # job id -> how many nodes it went to
    results: dict[str, list[tuple]] = field(default_factory=dict)
    encoded: dict[str, str] = field(default_factory=dict)  # job id -> finished document
    failed: int = 0                       # jobs that did not succeed everywhere
    counts: dict[str, int] = field(default_factory=dict)   # task status -> how many
    last_event: float = 0.0
    bytes_sent: int = 0

    def __post_init__(self) -> None:
        self.by_id = {j["id"]: j for j in self.jobs}

    def add(self, node: str, row: dict[str, Any]) -> bool:
        """One task's final row; True when it was the last one awaited."""
        got = self.results.setdefault(row["job_id"], [])
        got.append((self.names.get(node, ""), row["status"], row["rc"], row["stdout"],
                    row["stderr"], row["cached"], row["exec_time"], row["roundtrip_time"],
                    row["transfer"], row["error"], row["finished"]))
        if len(got) >= self.expect.get(row["job_id"], 0):
            self._encode(row["job_id"])
        self.remaining -= 1
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        return self.remaining <= 0

    def _encode(self, job_id: str) -> None:
        kept = sorted(self.results.pop(job_id, []), key=lambda r: r[0])
        doc = job_doc(self.by_id[job_id], [dict(zip(KEPT, r)) for r in kept])
        self.failed += doc["status"] != "success"
        self.encoded[job_id] = json.dumps(doc)

    def payload(self) -> bytes:
        """The whole answer: ``json.dumps`` of the document list, as ``--json`` prints."""
        for job in self.jobs:
            if job["id"] not in self.encoded:
                self._encode(job["id"])
        return ("[" + ", ".join(self.encoded[j["id"]] for j in self.jobs) + "]").encode()

    def progress(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "bytes_sent": self.bytes_sent, **self.counts}
