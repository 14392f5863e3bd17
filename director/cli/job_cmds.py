"""Job commands: exec, orchestrate, jobs, job.

Files are parsed here, before anything is sent: a bad line is reported with
file:line and no node ever sees any of it.
"""

from __future__ import annotations

import os
import sys
import time

import click

from director.cli import output

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
TARGET = click.option("--target", "-t", "targets", multiple=True,
                      help="Node name or glob (repeatable). Default: every online node.")
SILENT_AFTER_SUBMIT = 5.0  # seconds without progress that mean the server went away
WAIT = click.option("--wait", "-w", is_flag=True, help="Wait, show progress, exit 2 on failure.")


def _submit(obj, steps, targets, wait: bool, as_json: bool) -> None:
    from director.errors import ConnectionFailed
    from director.net.control import ControlClient, result_of
    from director.protocol.control import CtlEvent

    payload = {"steps": [{"targets": list(s.targets), "async": s.async_, "name": s.name,
                          "jobs": [j.to_dict() for j in s.jobs]} for s in steps],
               "targets": list(targets), "wait": wait, "base": os.getcwd()}
    with ControlClient(obj.settings().home, timeout=10.0) as c:
        if not wait:
            res = c.call("jobs.submit", payload)
            if as_json:
                output.emit_json(res)
            else:
                click.echo("\n".join(output.safe_text(j, inline=True) for j in res["jobs"]))
            return
        progress = _Progress(enabled=sys.stderr.isatty() and not as_json)
        docs = None
        c.send("jobs.submit", payload)
        while True:
            try:  # the server sends progress every 0.25 s once the work is submitted
                msg = c.recv(SILENT_AFTER_SUBMIT if progress.jobs else 15.0)
            except ConnectionFailed:
                progress.close()
                if not progress.jobs:
                    raise
                raise ConnectionFailed(
                    f"the server went away while the jobs ran (they go on once it is back);"
                    f" follow them with: director job {progress.jobs[-1]}"
                    f" (all: director jobs)") from None
            if isinstance(msg, CtlEvent):
                progress.update(msg.event, msg.data if isinstance(msg.data, dict) else {})
                continue
            progress.close()
            if as_json and msg.ok and msg.result_json and not sys.stdout.isatty():
                # already encoded as compact --json output: pass it through untouched
                sys.stdout.buffer.write(msg.data + b"\n")
                sys.stdout.flush()
                raise SystemExit(2 if msg.failed else 0)
            docs = result_of(msg)
            break
    if as_json:
        output.emit_json(docs)
    else:
        from director.cli.job_view import print_results

        for doc in docs:
            print_results(doc, header=len(docs) > 1)
    failed = [d for d in docs if d["status"] != "success"]
    raise SystemExit(2 if failed else 0)


class _Progress:
    """One self-rewriting line on a terminal: done / failed / running."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.total = 0
        self.start = time.monotonic()
        self.shown = False
        self.jobs: list[str] = []   # ids, once submitted

    def update(self, event: str, data: dict) -> None:
        if event == "submitted":
            self.total = _count(data.get("tasks"))
            jobs = data.get("jobs")
            self.jobs = [j for j in jobs if isinstance(j, str)] if isinstance(jobs, list) else []
        if not self.enabled or event != "progress":
            return
        done = _count(data.get("success"))
        bad = sum(_count(data.get(k)) for k in ("failed", "timeout", "lost", "cancelled"))
        running = self.total - done - bad
        elapsed = time.monotonic() - self.start
        line = f"\r{done}/{self.total} done, {bad} failed, {running} running"
        sent = _count(data.get("bytes_sent"))
        if sent:
            mib = sent / 1048576
            line += f", {mib:.1f} MiB sent ({mib / max(elapsed, 1e-3):.0f} MiB/s)"
        line += f"  ({elapsed:.1f}s)"
        sys.stderr.write(line + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _count(value: object) -> int:
    """A count from a progress event; anything but a plain number is 0 (the line shows
    only numbers we format, never text from the wire)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and abs(value) < 1e18 else 0


@click.command("exec")
@TARGET
@WAIT
@JSON
@click.argument("job", nargs=-1, required=True)
@click.pass_obj
def exec_(obj, targets, wait: bool, as_json: bool, job: tuple[str, ...]) -> None:
    """Run one job line ('RUN uptime') on the targets."""
    from director.jobs.files import parse_job_text

    steps = parse_job_text(" ".join(job))
    _submit(obj, steps, targets, wait, as_json)


@click.command()
@TARGET
@WAIT
@JSON
@click.argument("files", nargs=-1, required=True)
@click.pass_obj
def orchestrate(obj, targets, wait: bool, as_json: bool, files: tuple[str, ...]) -> None:
    """Run Directorfiles or directord-style YAML orchestrations."""
    from director.jobs.files import load_orchestration

    steps = [s for f in files for s in load_orchestration(f)]
    _submit(obj, steps, targets, wait, as_json)


@click.command()
@click.option("--limit", "-n", default=20, show_default=True, help="How many jobs.")
@JSON
@click.pass_obj
def jobs(obj, limit: int, as_json: bool) -> None:
    """Recent jobs: id, verb, targets, status, counts, age."""
    from director.cli.run_cmds import call

    rows = call(obj, "jobs.list", {"limit": limit})
    if as_json:
        output.emit_json(rows)
        return
    click.echo(output.table(
        ["ID", "JOB", "TARGETS", "STATUS", "COUNTS", "AGE"],
        [[r["id"], r["summary"][:50], _targets(r["targets"]), r["status"],
          " ".join(f"{k}={v}" for k, v in sorted(r["counts"].items())),
          output.ago(time.time() - r["age"])] for r in rows],
        empty="no jobs yet: try director exec --wait 'RUN uptime'"))


def _targets(names: list[str]) -> str:
    return ",".join(names) if len(names) <= 3 else f"{len(names)} nodes"


@click.command()
@click.argument("job_id")
@JSON
@click.pass_obj
def job(obj, job_id: str, as_json: bool) -> None:
    """A job's definition and its result on each node (ID or 'last')."""
    from director.cli.job_view import print_results
    from director.cli.run_cmds import call

    doc = call(obj, "jobs.get", {"id": job_id})
    if as_json:
        output.emit_json(doc)
    else:
        print_results(doc, header=True)


COMMANDS = [exec_, orchestrate, jobs, job]
