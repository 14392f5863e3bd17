"""Key and enrollment commands: keygen, token, enroll, keys."""

from __future__ import annotations

import click

from director.cli import output
from director.cli.run_cmds import call

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.command()
@click.option("--force", is_flag=True, help="Replace an existing keypair (a backup is kept).")
@JSON
@click.pass_obj
def keygen(obj, force: bool, as_json: bool) -> None:
    """Create this home's Curve25519 keypair."""
    from director.trust import keystore

    home = obj.settings(log=True).home  # log: a home made private is reported
    keystore.ensure_private_dir(__import__("pathlib").Path(home))
    pair = keystore.generate()
    backup = keystore.save(home, pair, force=force)
    if as_json:
        output.emit_json({"public_key": pair.public_z85, "fingerprint": pair.fingerprint,
                          "backup": str(backup) if backup else None})
        return
    click.echo(f"public key:  {pair.public_z85}\nfingerprint: {pair.fingerprint}")
    if backup:
        click.echo(f"previous keypair kept in {backup}")


@click.group()
def token() -> None:
    """Join tokens (server)."""


@token.command("create")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90s, 30m, 1h, 2d.")
@click.option("--uses", default=1, show_default=True, type=int, help="How many nodes may use it.")
@click.option("--address", default=None, help="HOST:PORT nodes should use in the printed command.")
@JSON
@click.pass_obj
def token_create(obj, ttl: str, uses: int, address: str | None, as_json: bool) -> None:
    """Print a one-line join token and the ready 'director enroll' command."""
    res = call(obj, "token.create", {"ttl": ttl, "uses": uses, "address": address})
    if as_json:
        output.emit_json(res)
        return
    safe = output.safe_text
    click.echo(safe(res["token"], inline=True))
    click.echo(f"# id {safe(res['id'], inline=True)}, {uses} use(s), expires"
               f" {output.until(res['expires'])}; on the node run:", err=True)
    click.echo(f"#   {safe(res['command'], inline=True)}", err=True)


@token.command("list")
@JSON
@click.pass_obj
def token_list(obj, as_json: bool) -> None:
    """Tokens and their state (secrets are never shown: only their hash is kept)."""
    rows = call(obj, "token.list")
    if as_json:
        output.emit_json(rows)
        return
    click.echo(output.table(["ID", "STATE", "USES LEFT", "EXPIRES", "CREATED"],
                            [[r["id"], r["state"], r["uses_left"], output.until(r["expires"]),
                              output.ago(r["created"])] for r in rows], empty="no tokens"))


@token.command("revoke")
@click.argument("token_id")
@click.pass_obj
def token_revoke(obj, token_id: str) -> None:
    """Revoke a token by its ID."""
    call(obj, "token.revoke", {"id": token_id})
    click.echo(f"token {output.safe_text(token_id, inline=True)} revoked")


@click.command()
@click.option("--server", "server_addr", required=True, help="HOST[:PORT] of the server.")
@click.option("--token", default=None, help="Join token from 'director token create'.")
@click.option("--server-key", default=None, help="Server public key (director keys server).")
@click.option("--name", "node_name", default=None,
              help="This node's name (default: the global --name, else the host name).")
@click.option("--wait", is_flag=True, help="Wait until an operator accepts or refuses.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for an answer.")
@JSON
@click.pass_obj
def enroll(obj, server_addr: str, token: str | None, server_key: str | None,
           node_name: str | None, wait: bool, timeout: float, as_json: bool) -> None:
    """Create this node's key if missing, pin the server key and ask to join."""
    from director.client.enroll import enroll as do_enroll

    # --name here and the global --name are one setting: validated the same way
    settings = obj.settings(log=True, enroll_token=token, name=node_name)
    token = token or settings.enroll_token or None
    if token and server_key:
        raise click.UsageError("give --token or --server-key, not both")
    out = do_enroll(settings, server=server_addr, token=token, server_key=server_key,
                    name=settings.name, wait=wait, timeout=timeout)
    if as_json:
        output.emit_json({"name": out.name, "state": out.state, "fingerprint": out.fingerprint,
                          "reason": out.reason})
    else:
        safe = output.safe_text
        click.echo(f"node {safe(out.name, inline=True)}: {safe(out.state, inline=True)}"
                   f"  (fingerprint {safe(out.fingerprint, inline=True)})")
        if out.state == "refused":  # the reason is the server's words: one safe line
            reason = safe(out.reason or "no reason given", inline=True)
            click.echo(f"director: enrollment refused: {reason}", err=True)
        elif out.reason:
            click.echo(safe(out.reason))
    raise SystemExit({"accepted": 0, "pending": 3}.get(out.state, 1))


@click.group()
def keys() -> None:
    """Node keys on the server: list, accept, reject, revoke, delete."""


@keys.command("list")
@JSON
@click.pass_obj
def keys_list(obj, as_json: bool) -> None:
    """Every node key with its state, name and fingerprint."""
    rows = call(obj, "keys.list")
    if as_json:
        output.emit_json(rows)
        return
    click.echo(output.table(["NAME", "STATE", "FINGERPRINT", "SINCE"],
                            [[r["name"], r["state"], r["fingerprint"], output.ago(r["updated"])]
                             for r in rows], empty="no node keys"))


def _state_command(verb: str, op: str, help_: str):
    @keys.command(verb, help=help_)
    @click.argument("name")
    @JSON
    @click.pass_obj
    def command(obj, name: str, as_json: bool) -> None:
        res = call(obj, op, {"name": name})
        if as_json:
            output.emit_json(res)
        else:
            safe = output.safe_text
            click.echo(f"node {safe(res['name'], inline=True)}: {safe(res['state'], inline=True)}"
                       f"  (fingerprint {safe(res['fingerprint'], inline=True)})")
    return command


_state_command("accept", "keys.accept", "Accept a pending (or rejected) node.")
_state_command("reject", "keys.reject", "Reject a node's key.")
_state_command("revoke", "keys.revoke", "Revoke a node's key: cuts it off at once.")
_state_command("delete", "keys.delete", "Forget a node's key (it may enroll again).")


@keys.command("server")
@click.option("--address", default=None, help="HOST:PORT nodes should use in the printed command.")
@JSON
@click.pass_obj
def keys_server(obj, address: str | None, as_json: bool) -> None:
    """The server's public key (Z85, and hex that needs no shell quoting), its fingerprint
    and a ready 'director enroll' line for a node that joins without a token."""
    import shlex

    from director.trust.keyfmt import parse_public_key

    res = call(obj, "keys.server")
    z85 = res["public_key"]
    hex_key = parse_public_key(z85).hex()
    where = address or res.get("address") or "SERVER:5555"
    command = (f"director enroll --server {shlex.quote(where)} --server-key {shlex.quote(z85)}"
               " --name NAME")
    if as_json:
        output.emit_json({"public_key": z85, "public_key_hex": hex_key,
                          "fingerprint": res["fingerprint"], "address": where,
                          "command": command})
        return
    safe = output.safe_text
    click.echo(f"public key:  {safe(z85, inline=True)}\n"
               f"public key (hex, shell-safe): {hex_key}\n"
               f"fingerprint: {safe(res['fingerprint'], inline=True)}\n"
               "# on the node (NAME: its node name; it stays pending until 'keys accept NAME'):\n"
               f"{safe(command, inline=True)}")


@click.command()
@click.option("--since", default="1h", show_default=True,
              help="How far back: 30m, 1h, 7d (events are kept bounded on the server).")
@JSON
@click.pass_obj
def events(obj, since: str, as_json: bool) -> None:
    """Security events the server kept: key changes, enrollment conflicts, false name
    claims, tokens created/used/refused/revoked, refused handshakes (summarised)."""
    from director.errors import ConfigError, DirectorError
    from director.trust.tokens import parse_ttl

    try:
        seconds = parse_ttl(since)
    except ConfigError:
        raise DirectorError(f"--since must be a duration like 30m, 1h or 7d, not "
                            f"{output.safe_text(since, inline=True)}") from None
    rows = call(obj, "events.list", {"since": seconds})
    if as_json:
        output.emit_json(rows)
        return
    click.echo(output.table(
        ["WHEN", "EVENT", "NAME", "FINGERPRINT", "ADDRESS", "DETAIL"],
        [[output.ago(r["time"]), r["event"], r["name"], r["fingerprint"], r["address"] or "",
          r["detail"]] for r in rows], empty=f"no security events in the last {since}"))


COMMANDS = [keygen, token, enroll, keys, events]
