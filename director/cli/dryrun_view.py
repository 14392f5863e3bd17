"""``exec --dry-run`` and ``orchestrate --dry-run``: the server's plan, shown.

The server plans the jobs exactly as it would run them (``jobs.plan``, server/dryrun.py)
and answers with the plan instead of storing or sending anything.  Everything in the
plan went through the server, so it is shown through ``safe_text``.
"""

from __future__ import annotations

from typing import Any

import click

DRY_RUN = click.option(
    "--dry-run", is_flag=True,
    help="Print the plan per node (jobs, content hashes, what a COPY would send or"
    " change) and run nothing.")


def show_plan(obj: Any, jobs: Any, targets: Any, as_json: bool, allow_offline: bool) -> None:
    """Ask the server for the plan of ``jobs`` and print it (exit 0: it is valid)."""
    from director.cli import output
    from director.cli.run_cmds import api_client

    plan = api_client(obj).plan(jobs, targets, allow_offline=allow_offline)
    if as_json:
        output.emit_json(plan)
        return
    click.echo("\n".join(plan_lines(plan)))


def plan_lines(plan: dict) -> list[str]:
    """The plan as text: a header, then per node each job with its hash and files."""
    from director.cli.output import safe_text

    jobs = {j.get("n"): j for j in _list(plan.get("jobs")) if isinstance(j, dict)}
    nodes = [n for n in _list(plan.get("nodes")) if isinstance(n, dict)]
    lines = [f"dry run: {len(jobs)} job(s) on {len(nodes)} node(s),"
             f" {_int(plan.get('tasks'))} task(s); nothing was run, sent or stored"]
    for node in nodes:
        name = safe_text(node.get("name"), inline=True)
        state = "online" if node.get("state") == "online" else "offline: its tasks would wait"
        lines.append(f"{name} ({state})")
        steps = node.get("plan")
        if not isinstance(steps, list):
            lines.append(f"  {_int(node.get('jobs'))} job(s) (too many tasks to list each)")
            continue
        for step in steps:
            job = jobs.get(step.get("n")) if isinstance(step, dict) else None
            if job is None:
                continue
            lines.append(f"  {_int(job.get('n'))}. {safe_text(job.get('summary'), inline=True)}")
            lines.append("     " + _hash_line(job))
            copy = step.get("copy")
            if isinstance(copy, dict):
                lines.extend(_file_lines(copy))
    return lines


def _hash_line(job: dict) -> str:
    from director.cli.output import safe_text

    late = [safe_text(n, inline=True) for n in _list(job.get("unresolved"))]
    if late:
        refs = ", ".join("${" + n + "}" for n in late)
        return (f"hash decided on the node: {refs} {'is' if len(late) == 1 else 'are'} set"
                " there at run time (--stdout-arg, --stderr-arg, CACHEFILE)")
    return f"hash {safe_text(job.get('hash'), inline=True)}"


def _file_lines(copy: dict) -> list[str]:
    from director.cli.output import safe_text

    known = copy.get("known") is True
    out = []
    files = [f for f in _list(copy.get("files")) if isinstance(f, dict)]
    for f in files:
        status = f.get("status")
        if status == "unchanged":
            label = "unchanged"
        elif status == "would change":
            label = f"would change ({_bytes(f.get('bytes'))} to send)"
        elif known:
            label = f"would send ({_bytes(f.get('size'))})"
        else:
            label = f"would send (node state unknown, {_bytes(f.get('size'))})"
        out.append(f"     {label:<44} {safe_text(f.get('path'), inline=True)}")
    more = _int(copy.get("files_total")) - len(files)
    if more > 0:
        counts = copy.get("counts") if isinstance(copy.get("counts"), dict) else {}
        out.append(f"     ... and {more} more file(s); in all: "
                   + ", ".join(f"{_int(counts.get(k))} {k}"
                               for k in ("unchanged", "would change", "would send")))
    if files or more > 0:
        out.append(f"     {_bytes(copy.get('bytes'))} to send"
                   + ("" if known else " at most (the server has no record of this node's"
                      " files there)"))
    return out


def _bytes(value: Any) -> str:
    n = _int(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value and abs(value) < 1e18 else 0


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []
