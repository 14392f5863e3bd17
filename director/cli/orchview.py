"""Orchestrations on a terminal: the one-line progress while waiting, an orchestration's
summary (``director job ORCH``, ``orchestrate --wait``), and ``director jobs`` with an
orchestration as one line.

Sizes do not grow with the number of jobs: a summary shows at most ``NODE_ROWS`` nodes
and a few lines of the first failure.  Every string from the server or a node goes
through ``output.safe_text``; the progress line shows only numbers we format and node
names made safe.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from director.cli import output

NODE_ROWS = 20     # nodes listed in a summary (those with trouble first)
TAIL_WIDTH = 200   # characters of a line of the first failure's output
NAMES = 3          # outstanding nodes named in the progress line
BAD = ("failed", "timeout", "lost", "cancelled")
COLUMNS = ("success", "failed", "cancelled", "timeout", "lost", "running", "queued")


def count(value: object) -> int:
    """A count from the server; anything but a plain number is 0 (the line shows only
    numbers we format, never text from the wire)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and abs(value) < 1e18 else 0


class Progress:
    """One self-rewriting line on a terminal: done / failed / running / queued (and
    queued for an offline node), bytes sent, the nodes still to answer."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.total = 0
        self.start = time.monotonic()
        self.shown = False
        self.jobs: list[str] = []   # ids, once submitted
        self.orch = ""              # the orchestration id, once submitted

    def update(self, event: str, data: dict) -> None:
        if event == "submitted":
            self.total = count(data.get("tasks"))
            jobs = data.get("jobs")
            self.jobs = [j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else []
            orch = data.get("orch")
            self.orch = orch if isinstance(orch, str) and orch.isalnum() else ""
        if not self.enabled or event != "progress":
            return
        sys.stderr.write("\r" + self.line(data, time.monotonic() - self.start) + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def line(self, data: dict, elapsed: float) -> str:
        """The progress line for one ``progress`` event, cut to the terminal's width."""
        done = count(data.get("success"))
        bad = sum(count(data.get(k)) for k in BAD)
        parts = [f"{done}/{self.total} done", f"{bad} failed"]
        if "running" in data:
            running, queued = count(data.get("running")), count(data.get("queued"))
            offline = count(data.get("queued_offline"))
            parts += [f"{running} running", f"{queued} queued"]
            if offline:
                parts.append(f"{offline} queued (node offline)")
        else:  # a server that does not say
            parts.append(f"{max(0, self.total - done - bad)} running")
        sent = count(data.get("bytes_sent"))
        if sent:
            mib = sent / 1048576
            parts.append(f"{mib:.1f} MiB sent ({mib / max(elapsed, 1e-3):.0f} MiB/s)")
        text = ", ".join(parts)
        names = data.get("waiting_on")
        left = count(data.get("nodes_left"))
        if isinstance(names, list) and left:
            shown = [output.safe_text(n, inline=True)[:30] for n in names[:NAMES]]
            more = left - len(shown)
            text += "; waiting on " + ", ".join(shown) + (f" +{more}" if more > 0 else "")
        text += f"  ({elapsed:.1f}s)"
        import shutil

        width = shutil.get_terminal_size((100, 20)).columns - 1
        return text if len(text) <= width else text[:max(width - 3, 10)] + "..."

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.shown = False


# -- director job ORCH ----------------------------------------------------------------
def is_summary(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "orchestration"


def print_summary(doc: dict) -> None:
    """An orchestration in at most ~35 lines, whatever its number of jobs."""
    safe = output.safe_text
    oid = safe(doc.get("id"), inline=True)
    name = safe(doc.get("name") or "", inline=True)[:80]
    click.echo("  ".join(p for p in (f"orchestration {oid}", name,
                                     f"[{safe(doc.get('status'), inline=True)}]") if p))
    duration = doc.get("duration")
    took = output.seconds(duration) if isinstance(duration, (int, float)) else "-"
    click.echo(f"{count(doc.get('job_count'))} jobs on {count(doc.get('node_count'))} nodes,"
               f" {count(doc.get('tasks'))} tasks, "
               f"{'running for' if doc.get('running') else 'took'} {took}")
    nodes = doc.get("nodes") if isinstance(doc.get("nodes"), dict) else {}
    totals = doc.get("counts") if isinstance(doc.get("counts"), dict) else {}
    cols = [c for c in COLUMNS if c in ("success", "failed", "cancelled") or count(totals.get(c))]
    rows = sorted(nodes.items(), key=lambda kv: (_trouble(kv[1]) == 0, kv[0]))
    shown = rows[:NODE_ROWS]
    table = [[name + (" (offline)" if isinstance(n, dict) and n.get("offline") else ""),
              *(count(_counts(n).get(c)) for c in cols)] for name, n in shown]
    click.echo(output.table(["NODE", *(c.upper() for c in cols)], table, empty="(no tasks)"))
    if len(rows) > len(shown):
        rest = rows[len(shown):]
        clean = sum(1 for _, n in rest if not _trouble(n))
        click.echo(f"... {len(rest)} more nodes ({clean} of them with no failure)")
    failure = doc.get("first_failure")
    if isinstance(failure, dict):
        _print_failure(failure)
    click.echo(f"every job: director job {oid} --all; timings: director analyze {oid}")


def _counts(node: Any) -> dict:
    c = node.get("counts") if isinstance(node, dict) else None
    return c if isinstance(c, dict) else {}


def _trouble(node: Any) -> int:
    return sum(count(v) for k, v in _counts(node).items() if k != "success")


def _print_failure(f: dict) -> None:
    safe = output.safe_text
    rc = f.get("rc")
    click.echo(f"first failure: {safe(f.get('node'), inline=True)}, job"
               f" {safe(f.get('job'), inline=True)}"
               f" ({safe(f.get('summary'), inline=True)[:60]}):"
               f" {safe(f.get('status'), inline=True)}"
               + (f", rc {count(rc)}" if isinstance(rc, int) else ""))
    for label in ("stderr_tail", "stdout_tail"):
        tail = f.get(label)
        if isinstance(tail, list) and tail:
            click.echo(f"  {label.split('_')[0]} (last lines):")
            for line in tail[-5:]:
                click.echo("    " + safe(line, inline=True)[:TAIL_WIDTH])
            return
    if f.get("error"):
        click.echo("  " + safe(f.get("error"), inline=True)[:TAIL_WIDTH])


def show_finished(client: Any, docs: list) -> None:
    """What ``--wait`` printed when the work ended: one job's table, or for several jobs
    the orchestration's summary (the server's, so it matches ``director job ORCH``)."""
    from director.cli.job_view import print_results

    orchs = {d.orchestration for d in docs}
    if len(docs) > 1 and len(orchs) == 1 and "" not in orchs:
        doc = client.show(orchs.pop())
        if is_summary(doc):
            print_summary(doc)
            return
    for doc in docs:
        print_results(doc, header=len(docs) > 1)


def show_job(client: Any, job_id: str, every_job: bool, as_json: bool) -> None:
    """``director job ID|last [--all]``: a job, or an orchestration's summary."""
    from director.cli.job_view import print_results

    doc = client.show(job_id, every_job=every_job)
    if as_json:
        output.emit_json(doc)
    elif is_summary(doc):
        print_summary(doc)
    elif isinstance(doc, list):
        for d in doc:
            print_results(d, header=True)
    else:
        print_results(doc, header=True)


# -- director jobs --------------------------------------------------------------------
def print_overview(rows: list) -> None:
    """One line per job, and one per orchestration of several jobs."""
    def line(r: dict) -> list:
        counts = r.get("counts") if isinstance(r.get("counts"), dict) else {}
        duration = r.get("duration")
        took = output.seconds(duration) if isinstance(duration, (int, float)) else "-"
        if is_summary(r):
            name = r.get("name") or f"{r.get('first_job') or ''} ..."
            what = f"{output.safe_text(name, inline=True)[:40]} ({count(r.get('job_count'))} jobs)"
            targets = f"{count(r.get('node_count'))} nodes"
        else:
            what = output.safe_text(r.get("summary"), inline=True)[:50]
            names = r.get("targets") if isinstance(r.get("targets"), list) else []
            targets = ",".join(map(str, names)) if len(names) <= 3 else f"{len(names)} nodes"
        age = r.get("age")
        return [r.get("id"), what, targets, r.get("status"),
                " ".join(f"{k}={count(v)}" for k, v in sorted(counts.items())), took,
                output.ago(time.time() - age) if isinstance(age, (int, float)) else "-"]
    click.echo(output.table(
        ["ID", "JOB", "TARGETS", "STATUS", "COUNTS", "DURATION", "AGE"],
        [line(r) for r in rows if isinstance(r, dict)],
        empty="no jobs yet: try director exec --wait 'RUN uptime'"))
