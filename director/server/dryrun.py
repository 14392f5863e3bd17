"""Dry runs (``jobs.plan``): a submission planned exactly as ``jobs.submit`` plans it,
then described instead of stored or sent.

``JobBook.submit`` runs its usual path (the COPY manifests built off the loop, targets
matched, ``submission.plan``); with ``dry_run`` set, ``_submit`` hands the finished
``Submission`` here before anything is committed.  A mixin of JobBook; part of the
core: no I/O.

What a node already has is known to the server only from what it copied there: each
COPY a node reports done is remembered here (in memory, bounded) as the manifest it
applied, per node and destination.  The node's own stat cache never leaves the node,
so files the server has no record of are "would send (node state unknown)".
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from cachetools import LRUCache

from director.jobs.dsl import Instruction
from director.jobs.plan import referenced_names, stored_hash

MAX_REMEMBERED_FILES = 2_000_000  # file entries of remembered manifests, all nodes together
MAX_PLAN_TASKS = 50_000           # beyond this, nodes are listed without their jobs
MAX_LISTED_FILES = 1_000          # files listed per COPY per node (all are counted)
MAX_PLAN_FILES = 20_000           # files listed in the whole plan


class CopyRecords:
    """The manifest each node last applied per COPY destination (as written in the job).

    Manifests are shared between nodes, not copied; the bound counts their files.
    """

    def __init__(self, max_files: int = MAX_REMEMBERED_FILES):
        self.lru: LRUCache = LRUCache(maxsize=max_files,
                                      getsizeof=lambda m: len(m.files) + 1)

    def record(self, key: str, manifest: Any) -> None:
        try:
            self.lru[(key, manifest.dest)] = manifest
        except ValueError:  # larger than the whole bound: not remembered
            self.lru.pop((key, manifest.dest), None)

    def last(self, key: str, dest: str) -> Any:
        return self.lru.get((key, dest))


def file_changes(new: Any, old: Any) -> dict[str, Any]:
    """Each file of manifest ``new`` against ``old`` (the last one applied at the same
    destination on a node, or None): its status and the bytes that would move."""
    files = []
    counts = {"unchanged": 0, "would change": 0, "would send": 0}
    before = {e.rel: e for e in old.files} if old is not None else {}
    moved = 0
    for entry in new.files:
        prev = before.get(entry.rel)
        if old is None:
            status, size = "would send", entry.size
        elif prev is None:
            status, size = "would send", entry.size
        elif prev.digest == entry.digest and prev.mode == entry.mode:
            status, size = "unchanged", 0
        else:  # chunks the node's last copy of this file already had are reused
            had = set(prev.chunks)
            status = "would change"
            size = sum(min(new.chunk_size, entry.size - i * new.chunk_size)
                       for i, d in enumerate(entry.chunks) if d not in had)
        counts[status] += 1
        moved += size
        if len(files) < MAX_LISTED_FILES:
            path = new.dest.rstrip("/") + "/" + entry.rel if entry.rel else new.dest
            files.append({"path": path, "status": status, "size": entry.size,
                          "bytes": size})
    return {"known": old is not None, "files": files, "counts": counts, "bytes": moved,
            "files_total": len(new.files)}


def run_time_names(instrs: list[Instruction]) -> list[list[str]]:
    """Per job, the ARG names it reads whose value an earlier job of the submission sets
    on the node at run time: ``--stdout-arg``/``--stderr-arg``, an ARG made from such a
    value, and after a CACHEFILE any name no operator ARG before it set."""
    late: set[str] = set()
    operator: set[str] = set()
    cachefile = False
    out = []
    for instr in instrs:
        names = referenced_names(instr) - {"vars"}
        used = sorted(names & late | (names - operator if cachefile else set()))
        out.append(used)
        for name in (instr.stdout_arg, instr.stderr_arg):
            if name:
                late.add(name)
                operator.discard(name)
        if instr.verb == "ARG":
            (late if used else operator).add(instr.name)
            (operator if used else late).discard(instr.name)
        elif instr.verb == "CACHEFILE":
            cachefile = True
    return out


class DryRuns:
    """Needs the book's ``copies``; JobBook calls ``remember_copy`` on each result of a
    task in flight and ``plan_doc`` from ``_submit`` on a dry run."""

    @cached_property
    def copy_records(self) -> CopyRecords:
        return CopyRecords()

    def remember_copy(self, key: str, result: Any) -> None:
        """A node's result for a task in flight there: a COPY it did remembers its
        manifest (what the node has at that destination now)."""
        if result.status == "success":
            copy = self.copies.get(result.job_id)  # type: ignore[attr-defined]
            if copy is not None:
                self.copy_records.record(key, copy[0])

    def plan_doc(self, sub: Any, accepted: dict[str, str], online: list[str]) -> dict:
        """The plan of ``sub`` per node: each job, its content hash, and what each COPY
        would send or change there.  Nothing is stored or sent.  Bounded for the reply:
        past MAX_PLAN_TASKS nodes only count their jobs, past MAX_PLAN_FILES files are
        only counted; a COPY is compared once per distinct record, not once per node."""
        stored = [json.loads(j["instruction"]) for j in sub.jobs]
        late = run_time_names([Instruction.from_dict(d) for d in stored])
        detailed = sub.ntasks <= MAX_PLAN_TASKS
        targets: dict[str, list[str]] = {}   # a step's jobs share one targets JSON
        jobs, per_node = [], {}
        compared: dict[tuple[str, int], dict] = {}
        budget = MAX_PLAN_FILES
        for n, (row, d, names) in enumerate(zip(sub.jobs, stored, late), 1):
            chosen = targets.get(row["targets"])
            if chosen is None:
                chosen = targets[row["targets"]] = json.loads(row["targets"])
            doc: dict[str, Any] = {
                "n": n, "verb": row["verb"], "summary": row["summary"],
                "hash": stored_hash(d, row["hash_extra"]),  # as job --json shows it
                "async": not row["lane"].endswith(".0"), "unresolved": names,
                "nodes": len(chosen)}
            if detailed:
                doc["targets"] = chosen
            copy = sub.copies.get(row["id"])
            if copy is not None:
                doc["files_total"] = len(copy[0].files)
                doc["bytes_total"] = copy[0].bytes_total
            jobs.append(doc)
            for name in chosen:
                entries = per_node.setdefault(name, [])
                if not detailed:
                    entries.append(n)
                    continue
                entry: dict[str, Any] = {"n": n}
                if copy is not None:
                    old = self.copy_records.last(accepted[name], copy[0].dest)
                    change = compared.get((row["id"], id(old)))
                    if change is None:
                        change = compared[(row["id"], id(old))] = file_changes(copy[0], old)
                    if budget < len(change["files"]):
                        change = {**change, "files": []}
                    budget -= len(change["files"])
                    entry["copy"] = change
                entries.append(entry)
        up = set(online)
        nodes = []
        for name in sorted(per_node):
            node: dict[str, Any] = {"name": name,
                                    "state": "online" if name in up else "offline",
                                    "jobs": len(per_node[name])}
            if detailed:
                node["plan"] = per_node[name]
            nodes.append(node)
        return {"dry_run": True, "jobs": jobs, "nodes": nodes, "tasks": sub.ntasks,
                "detailed": detailed}
