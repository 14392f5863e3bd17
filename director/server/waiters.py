"""Operators waiting on an orchestration (``--wait``): progress and the final answer.

Each job's document is built and encoded as soon as every node answered it, so
the reply after the last result is a join, not an encoding of everything while
the nodes sit idle.  The answer is JSON encoded exactly the way ``--json`` prints
it, so the CLI can pass it through untouched.  A client that asks for ``parts``
gets it in pieces, in submission order, as jobs finish (``take_parts``): the server
never holds or joins the whole answer (130 MB at 500,000 results) in one loop turn.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, deque
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Iterable

from director.server.jobviews import job_doc, overall, result_doc

_NAME, _STATUS, _ENTRY = itemgetter(0), itemgetter(1), itemgetter(2)  # of a kept answer
PART_BYTES = 1 << 20  # a waiting client gets the answer in pieces of about this much


@dataclass
class Waiter:
    rid: bytes
    jobs: list[dict[str, Any]]            # job rows, as stored, in submission order
    names: dict[str, str]                 # node key -> name at submission
    remaining: int                        # tasks not final yet
    expect: dict[str, int]                # job id -> how many nodes it went to
    # job id -> (node name, status, its '"name": {result}' JSON) for each answer: encoded
    # as it arrives (the row dict is not kept, and no loop turn encodes a whole job)
    results: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    encoded: dict[str, str] = field(default_factory=dict)  # job id -> finished document
    failed: int = 0                       # jobs that did not succeed everywhere
    counts: dict[str, int] = field(default_factory=dict)   # task status -> how many
    last_event: float = 0.0
    bytes_sent: int = 0
    left: dict[str, int] = field(default_factory=dict)     # node key -> tasks not final
    parts: bool = False                   # the client takes the answer in pieces
    cursor: int = 0                       # jobs before it went out in a part
    scan: int = 0                         # jobs before it are encoded (from the cursor on)
    ready: int = 0                        # bytes of those between cursor and scan
    parts_sent: int = 0
    running: dict[str, int] = field(default_factory=dict)  # node key -> tasks sent there
    todo: deque[str] = field(default_factory=deque)        # finished jobs, not encoded yet

    def __post_init__(self) -> None:
        self.by_id = {j["id"]: j for j in self.jobs}
        self.quoted: dict[str, str] = {}  # node key -> its name as JSON
        if not self.left:  # per node, from each job's targets (a step's jobs share one list)
            keys = {name: key for key, name in self.names.items()}
            for targets, n in Counter(j["targets"] for j in self.jobs).items():
                for name in json.loads(targets):
                    key = keys.get(name, name)
                    self.left[key] = self.left.get(key, 0) + n

    def sent(self, node: str, n: int) -> None:
        """``n`` tasks went to ``node`` (negative: came back unsent)."""
        self.running[node] = max(0, self.running.get(node, 0) + n)

    def add(self, node: str, row: dict[str, Any]) -> bool:
        """One task's final row; True when it was the last one awaited."""
        got = self.results.setdefault(row["job_id"], [])
        created = self.by_id[row["job_id"]]["created"] if row["job_id"] in self.by_id else None
        name = self.names.get(node, "")
        quoted = self.quoted.get(node)
        if quoted is None:  # a node answers once per job: its name is encoded once
            quoted = self.quoted[node] = json.dumps(name)
        # the document's entry whole, here: the job's last answer only sorts and joins
        got.append((name, row["status"], f"{quoted}: {json.dumps(result_doc(row, created))}"))
        self._settled(node, row.get("sent") is not None)
        if len(got) >= self.expect.get(row["job_id"], 0):
            self.todo.append(row["job_id"])  # encoded a share per loop turn: encode_some
        self.remaining -= 1
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        return self.remaining <= 0

    def encode_some(self, entries: int) -> int:
        """Encode documents of finished jobs, about ``entries`` answers' worth (one job
        at least); returns how many were encoded.  The last node to answer often ends
        dozens of jobs in one message: at 5,000 nodes each is a 5,000-entry document."""
        done = 0
        while self.todo and done < entries:
            job_id = self.todo.popleft()
            done += max(1, self.expect.get(job_id, 1))
            self._encode(job_id)
        return done

    def _encode(self, job_id: str) -> None:
        kept = self.results.pop(job_id, [])
        kept.sort(key=_NAME)  # (at 5,000 nodes this is one loop turn: kept to C calls)
        counts = dict(Counter(map(_STATUS, kept)))
        doc = job_doc(self.by_id[job_id], [])   # then what its results say, as job_doc does
        doc["status"], doc["counts"] = overall(list(counts)), counts
        self.failed += doc["status"] != "success"
        by_name = dict(zip(map(_NAME, kept), map(_ENTRY, kept)))  # as the document's dict
        head = json.dumps(doc)  # ... "results": {}} -- then the results already encoded
        self.encoded[job_id] = head[:-2] + ", ".join(by_name.values()) + "}}"
        if self.parts:
            self._advance()

    def payload(self) -> bytes:
        """The final reply's data: ``json.dumps`` of the document list, as ``--json``
        prints it -- or, after parts went out, the documents not sent yet (the client
        joins them: ``control.join_parts``)."""
        while self.todo:
            self._encode(self.todo.popleft())
        rest = self.jobs[self.cursor:]
        for job in rest:
            if job["id"] not in self.encoded:
                self._encode(job["id"])
        docs = ", ".join(self.encoded[j["id"]] for j in rest)
        return docs.encode() if self.parts_sent else f"[{docs}]".encode()

    def take_parts(self, size: int = PART_BYTES) -> list[bytes]:
        """The finished documents from the cursor on, in submission order, in pieces of
        about ``size`` bytes, once a whole piece is ready (the rest goes later, or with
        the final reply)."""
        out: list[bytes] = []
        while self.parts and self.ready >= size:
            docs: list[str] = []
            n = 0
            while n < size and self.cursor < self.scan:
                text = self.encoded.pop(self.jobs[self.cursor]["id"])
                docs.append(text)
                n += len(text)
                self.cursor += 1
            self.ready -= n
            self.parts_sent += 1
            out.append(", ".join(docs).encode())
        return out

    def _advance(self) -> None:
        """Count the documents finished in a row from the cursor on (``take_parts``)."""
        while self.scan < len(self.jobs):
            text = self.encoded.get(self.jobs[self.scan]["id"])
            if text is None:
                return
            self.ready += len(text)
            self.scan += 1

    def _settled(self, node: str, was_sent: bool) -> None:
        left = self.left.get(node, 0) - 1
        if left > 0:
            self.left[node] = left
        else:
            self.left.pop(node, None)
        if was_sent and self.running.get(node):
            self.running[node] -= 1

    def progress(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "bytes_sent": self.bytes_sent, **self.counts}

    def report(self, online: Callable[[str], bool]) -> dict[str, Any]:
        """The ``progress`` event: counts so far and where the rest are."""
        return {**self.progress(), **self.outstanding(online)}

    def outstanding(self, online: Callable[[str], bool], names: int = 3) -> dict[str, Any]:
        """Where the tasks not final yet are: running, queued, queued for a node that is
        offline (``--allow-offline``), and the nodes still to answer (``names`` of them,
        offline ones first)."""
        running = min(self.remaining, sum(self.running.values()))
        offline_nodes = [k for k in self.left if not online(k)]
        offline = sum(self.left[k] - self.running.get(k, 0) for k in offline_nodes)
        down = set(offline_nodes)
        first = heapq.nsmallest(names, self.left,
                                key=lambda k: (k not in down, self.names.get(k, k)))
        return {"running": running, "queued": max(0, self.remaining - running - offline),
                "queued_offline": max(0, offline), "nodes_left": len(self.left),
                "nodes_offline": len(offline_nodes),
                "waiting_on": [self.names.get(k, "") for k in first]}


def note_sent(waiters: dict[str, Waiter], orch_of: dict[str, str], node: str,
              job_ids: Iterable[str], n: int = 1) -> None:
    """Tasks of these jobs went to ``node`` (``n`` = -1: came back unsent): the waiting
    operators' running counts follow."""
    for job_id in job_ids:
        w = waiters.get(orch_of.get(job_id, ""))
        if w is not None:
            w.sent(node, n)
