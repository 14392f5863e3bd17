"""``director analyze ID|last``: where the time of a job or an orchestration went.

The server computes it from its stored rows (``jobs.analyze``, server/analyze.py); this
only lays it out.  Job lines and node names are shown through ``output.safe_text``.
"""

from __future__ import annotations

import click

from director.cli import output

SHOWN_NODES = 20   # slowest nodes listed on a terminal (all of them: --json)


@click.command()
@click.argument("job_id", metavar="ID|last")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def analyze(obj, job_id: str, as_json: bool) -> None:
    """Timing of a job or an orchestration ('last': the newest orchestration): wall
    time, execution vs queue wait, mean/median/p95, fastest and slowest node and job."""
    from director.cli.run_cmds import api_client

    doc = api_client(obj).analyze(job_id)
    if as_json:
        output.emit_json(doc)
        return
    for line in describe(doc):
        click.echo(line)


def describe(doc: dict) -> list[str]:
    safe = output.safe_text
    sec = output.seconds

    def spread(s: dict, total: bool = True) -> str:
        if not s.get("count"):
            return "-"
        return (f"{sec(s['total']) + ' in all; ' if total else ''}mean {sec(s['mean'])},"
                f" median {sec(s['median'])}, p95 {sec(s['p95'])}, max {sec(s['max'])}")

    counts = ", ".join(f"{v} {safe(k, inline=True)}" for k, v in sorted(doc["counts"].items()))
    lines = [f"{safe(doc['kind'], inline=True)} {safe(doc['id'], inline=True)}:"
             f" {doc['total_jobs']} job(s) on {doc['total_node_count']} node(s),"
             f" {doc['total_tasks']} task(s) ({counts})"
             + ("  [still running]" if doc.get("running") else "")]
    rows = [("wall time", sec(doc["wall_time"])),
            ("execution", spread(doc["exec_time"])),
            ("queue wait", spread(doc["queue_wait"])),
            ("round trip", spread(doc["roundtrip_time"])),
            ("overhead", f"{sec(doc['overhead_total'])} (round trip minus execution)"),
            ("job wall time", spread(doc["job_wall_time"], total=False)
             + " (created to its last answer)")]
    for label, key in (("fastest node", "fastest_node"), ("slowest node", "slowest_node")):
        n = doc.get(key)
        if n:
            rows.append((label, f"{safe(n['name'], inline=True)} ({sec(n['exec_time'])}"
                                " executing)"))
    for label, key in (("fastest job", "fastest_job"), ("slowest job", "slowest_job")):
        j = doc.get(key)
        if j:
            rows.append((label, f"{safe(j['id'], inline=True)} "
                                f"{safe(j['summary'], inline=True)[:50]}"
                                f" ({sec(j['exec_time'])} on {safe(j['node'], inline=True)})"))
    width = max(len(label) for label, _ in rows)
    lines += [f"  {label:<{width}}  {value}" for label, value in rows]
    nodes = sorted(doc["nodes"].items(), key=lambda kv: -(kv[1]["exec_time"] or 0))
    table = [[safe(name, inline=True), n["tasks"], n["success"], n["failed"], n["cancelled"],
              *([sec(n["exec_time"]), sec(n["exec_time_mean"]), sec(n["queue_wait"]),
                 sec(n["roundtrip_time"])] if n["tasks_timed"] else ["-"] * 4)]
             for name, n in nodes[:SHOWN_NODES]]
    lines.append("")
    lines += output.table(["NODE", "TASKS", "OK", "FAILED", "CANCELLED", "EXEC", "MEAN",
                           "QUEUE WAIT", "ROUNDTRIP"], table).split("\n")
    if len(nodes) > SHOWN_NODES:
        lines.append(f"... {len(nodes) - SHOWN_NODES} more node(s) (all of them: --json)")
    return lines


COMMANDS = [analyze]
