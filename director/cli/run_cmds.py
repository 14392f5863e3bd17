"""Commands that run or look at a process: server, client, health, config."""

from __future__ import annotations

import click

from director.cli import output
from director.errors import DirectorError


@click.command()
@click.pass_obj
def server(obj) -> None:
    """Run the server in the foreground (logs to stderr)."""
    from director.server.daemon import run_server

    raise SystemExit(run_server(obj.settings(log=True)))


@click.command()
@click.option("--token", default=None, help="Join token: enroll first if not enrolled.")
@click.pass_obj
def client(obj, token: str | None) -> None:
    """Run the node agent in the foreground; reconnects by itself."""
    settings = obj.settings(log=True, enroll_token=token)
    from director.client import pinning

    if settings.enroll_token and pinning.load(settings.home) is None:
        from director.client.enroll import enroll

        if not settings.server_address:
            raise DirectorError("enrolling needs the server: set --server-address or"
                                " DIRECTOR_SERVER_ADDRESS")
        out = enroll(settings, server=settings.server_address, token=settings.enroll_token,
                     server_key=None, name=settings.name, wait=True, timeout=30)
        if out.state != "accepted":
            raise DirectorError(f"enrollment {out.state}: {out.reason}")
    from director.client.agent import run_client

    raise SystemExit(run_client(settings))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait.")
@click.pass_obj
def health(obj, as_json: bool, timeout: float) -> None:
    """Exit 0 when the server or client in this home is up and serving."""
    from director.net.control import ping

    home = obj.settings().home
    info = ping(home, timeout=timeout)
    ok = bool(info) and info.get("serving", True)
    if as_json:
        output.emit_json(info or {"serving": False})
    elif ok:
        click.echo(f"{output.safe_text(info['role'], inline=True)} in {home} is serving")
    else:
        click.echo(f"director: nothing serving in {home}", err=True)
    raise SystemExit(0 if ok else 1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def config(obj, as_json: bool) -> None:
    """Show the effective configuration and where each value came from."""
    eff = obj.effective()
    if as_json:
        output.emit_json(eff.as_json())
        return
    if eff.config_file:
        click.echo(f"# config file: {eff.config_file}")
    click.echo(output.table(["KEY", "VALUE", "SOURCE"], eff.as_table()))


def api_client(obj):
    """The ``director.api`` Client for the server in this home (job commands use it)."""
    from director.api import Client

    return Client(obj.settings().home)


def call(obj, op: str, args: dict | None = None, timeout: float = 10.0):
    """One control-socket request to the server in this home."""
    return api_client(obj).request(op, args, timeout)


COMMANDS = [server, client, health, config]   # nodes: node_cmds.py
