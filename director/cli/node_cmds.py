"""Commands about nodes: ``nodes`` (the list), ``nodes label``, ``node NAME``.

Everything a node said about itself (its facts, its address, its version) goes
through ``output.safe_text`` before it reaches the terminal; ``--json`` prints it
JSON-escaped.
"""

from __future__ import annotations

import click

from director.cli import output
from director.cli.run_cmds import api_client, call

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(invoke_without_command=True)
@JSON
@click.pass_context
def nodes(ctx: click.Context, as_json: bool) -> None:
    """Accepted nodes: name, state, last seen, address, version, labels, fingerprint
    (nodes label NAME KEY=VALUE... sets labels)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = api_client(ctx.obj).nodes()
    if as_json:
        output.emit_json(rows)
        return
    click.echo(output.table(
        ["NAME", "STATE", "LAST SEEN", "ADDRESS", "VERSION", "LABELS", "FINGERPRINT"],
        [[r["name"], r["state"], output.ago(r["last_seen"]), r["address"], r["version"],
          _labels(r.get("labels")) or "-", r["fingerprint"]] for r in rows],
        empty="no nodes yet: create a join token with 'director token create'"))


@nodes.command("label")
@click.argument("name")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--remove", "remove", multiple=True, metavar="KEY",
              help="Remove this label (repeatable).")
@JSON
@click.pass_obj
def nodes_label(obj, name: str, assignments: tuple[str, ...], remove: tuple[str, ...],
                as_json: bool) -> None:
    """Set labels on a node (KEY=VALUE...) and remove others (--remove KEY); select
    nodes by them with --target label:KEY=VALUE."""
    from director import labels

    wanted = labels.parse_assignments(assignments)
    labels.change({}, wanted, list(remove))  # refused here, before anything is sent
    doc = call(obj, "nodes.label", {"name": name, "set": wanted, "remove": list(remove)})
    if as_json:
        output.emit_json(doc)
        return
    shown = _labels(doc.get("labels"))
    click.echo(f"{output.safe_text(doc.get('name'), inline=True)}: {shown or 'no labels'}")


@click.command()
@click.argument("name")
@JSON
@click.pass_obj
def node(obj, name: str, as_json: bool) -> None:
    """One node: its state, labels and facts (hostname, os, kernel, arch, cpus, memory,
    addresses, version)."""
    doc = call(obj, "node.get", {"name": name})
    if as_json:
        output.emit_json(doc)
        return
    click.echo(output.table(["NODE", output.safe_text(doc.get("name"), inline=True)],
                            _rows(doc)))


def _rows(doc: dict) -> list[list[str]]:
    facts = doc.get("facts") if isinstance(doc.get("facts"), dict) else {}
    os_doc = facts.get("os") if isinstance(facts.get("os"), dict) else {}
    memory = facts.get("memory")
    addresses = facts.get("addresses") if isinstance(facts.get("addresses"), list) else []
    rows = [
        ["state", doc.get("state")],
        ["last seen", output.ago(doc.get("last_seen"))],
        ["address", doc.get("address")],
        ["fingerprint", doc.get("fingerprint")],
        ["labels", _labels(doc.get("labels")) or "-"],
        ["hostname", facts.get("hostname")],
        ["os", " ".join(str(os_doc[k]) for k in ("id", "version") if k in os_doc)],
        ["kernel", facts.get("kernel")],
        ["arch", facts.get("arch")],
        ["cpus", facts.get("cpus")],
        ["memory", _bytes(memory) if isinstance(memory, int) else None],
        ["addresses", ", ".join(str(a) for a in addresses)],
        ["version", facts.get("version") or doc.get("version")],
    ]
    return [[k, "-" if v in (None, "") else v] for k, v in rows]


def _labels(labels: object) -> str:
    if not isinstance(labels, dict):
        return ""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


COMMANDS = [nodes, node]
