"""How one job's per-node results look on a terminal."""

from __future__ import annotations

import click

from director.cli import output


def _transfer(t: dict | None) -> str:
    if not t:
        return ""
    return (f"{t.get('files', 0)} files, sent {t.get('bytes_sent', 0)}/{t.get('bytes_total', 0)} B,"
            f" {t.get('chunks_reused', 0)} chunks reused, {t.get('skipped', 0)} unchanged")


def print_results(doc: dict, header: bool) -> None:
    """Every string here may come from a node: each goes through ``output.safe_text``."""
    safe = output.safe_text
    if header:
        click.echo(f"job {safe(doc['id'], inline=True)}  {safe(doc['summary'], inline=True)}"
                   f"  [{safe(doc['status'], inline=True)}]")
    rows = []
    for name, r in doc["results"].items():
        wait = r.get("queue_wait")  # sent minus created: time queued before its node had it
        rows.append([name, "queued (node offline)" if r.get("offline") else r["status"],
                     "" if r["rc"] is None else r["rc"],
                     output.seconds(wait if isinstance(wait, (int, float)) else None),
                     output.seconds(r["exec_time"]), output.seconds(r["roundtrip_time"]),
                     "yes" if r["cached"] else "", _transfer(r.get("transfer"))])
    click.echo(output.table(["NODE", "STATUS", "RC", "QUEUE WAIT", "EXEC", "ROUNDTRIP", "CACHED",
                             "TRANSFER"], rows, empty="(no targets)"))
    for name, r in doc["results"].items():
        for label, text in (("stdout", r["stdout"]), ("stderr", r["stderr"]),
                            ("error", r.get("error"))):
            text = safe(text).rstrip("\n")
            if text:
                lines = text.split("\n")
                shown = lines[:20]
                click.echo(f"--- {safe(name, inline=True)} {label}:")
                click.echo("\n".join("  " + ln for ln in shown))
                if len(lines) > 20:
                    click.echo(f"  ... {len(lines) - 20} more lines"
                               f" (director job {safe(doc['id'], inline=True)} --json)")
    if header:
        click.echo()
