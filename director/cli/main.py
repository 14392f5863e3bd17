"""The ``director`` command: a thin click layer over the library.

Only this package imports click and maps DirectorError to exit codes.  Each
command imports what it needs when it runs, so ``director exec`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from director.cli.output import safe_text
from director.errors import DirectorError

SETTING_OPTIONS = [
    ("--home", "home", str, "State directory of this node or server."),
    ("--server-address", "server_address", str, "HOST[:PORT] of the server (client)."),
    ("--port", "port", int, "Server port (default 5555)."),
    ("--bind", "bind", str, "Server bind endpoint (default tcp://0.0.0.0:5555)."),
    ("--name", "name", str, "This node's name (default: host name)."),
    ("--heartbeat-interval", "heartbeat_interval", float, "Seconds between heartbeats."),
    ("--node-expiry", "node_expiry", float, "Seconds without news before a node is offline."),
    ("--chunk-size", "chunk_size", int, "Transfer chunk size in bytes."),
    ("--log-level", "log_level", str, "debug, info, warning or error."),
    ("--mode", "mode", str, "Role of a bare 'director': server or client."),
]


class Ctx:
    """What the group collected: CLI-given settings and the config file path."""

    def __init__(self, cli: dict[str, Any], config_path: str | None):
        self.cli = cli
        self.config_path = config_path
        self._effective = None

    def _load(self, log: bool = False, **overrides: Any):
        from director.config import load_settings

        cli = dict(self.cli)
        cli.update({k: v for k, v in overrides.items() if v is not None})
        eff = load_settings(cli=cli, environ=os.environ, config_path=self.config_path)
        if log:
            _setup_logging(eff.settings.log_level)
        return eff

    def effective(self):
        """The settings as this home runs with them, each with its source (for
        ``director config``): an enrolled client's kept server and name included."""
        from director.client import pinning
        from director.config import with_home
        from director.errors import ConfigError
        from director.trust.keyfmt import key_to_z85

        eff = self._load()
        try:
            kept = pinning.load(eff.settings.home)
        except ConfigError:  # damaged: the client will say so when it starts
            kept = None
        if kept is None:
            return eff
        return with_home(eff, address=kept.address, server_key=key_to_z85(kept.server_key),
                         name=kept.name)

    def settings(self, log: bool = False, **overrides: Any):
        """The settings; ``log`` also configures logging (long-running commands:
        the others print one line and exit, and spare the import)."""
        return self._load(log, **overrides).settings


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True,
    )
    logging.getLogger("director.zap.pyzmq").setLevel(logging.WARNING)


def _with_settings(f):
    for flag, dest, typ, help_ in reversed(SETTING_OPTIONS):
        f = click.option(flag, dest, type=typ, default=None, help=help_)(f)
    return f


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=str, default=None, help="Config file (YAML).")
@_with_settings
@click.version_option(package_name="director")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, **settings: Any) -> None:
    """Director: zero-trust deployment and operations over ZeroMQ CURVE."""
    ctx.obj = Ctx(settings, config_path)
    if os.environ.get("NOTIFY_SOCKET") and ctx.invoked_subcommand in (None, "server", "client"):
        from director.cli.systemd import start_notifier  # started by a Type=notify unit

        start_notifier(ctx.obj.settings().home)
    if ctx.invoked_subcommand is None:
        mode = ctx.obj.settings(log=True).mode
        from director.cli import run_cmds

        ctx.invoke(run_cmds.server if mode == "server" else run_cmds.client)


def _register() -> None:
    from director.cli import (analyze_cmds, demo, install_cmds, job_cmds, node_cmds, run_cmds,
                              trust_cmds)

    for mod in (run_cmds, trust_cmds, job_cmds, analyze_cmds, demo, install_cmds, node_cmds):
        for command in mod.COMMANDS:
            cli.add_command(command)


_register()


def _debug_requested(argv: list[str]) -> bool:
    if os.environ.get("DIRECTOR_LOG_LEVEL", "").lower() == "debug":
        return True
    return any(a in ("--log-level=debug",) for a in argv) or any(
        a == "--log-level" and i + 1 < len(argv) and argv[i + 1] == "debug"
        for i, a in enumerate(argv)
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        rc = cli.main(args=argv, prog_name="director", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("director: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # one line, as every other error
        where = exc.ctx.command_path if exc.ctx is not None else "director"
        click.echo(f"director: {exc.format_message()} (see: {where} --help)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"director: {safe_text(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DirectorError as exc:
        if _debug_requested(argv):
            raise
        click.echo(f"director: {safe_text(exc)}", err=True)  # may quote a peer's words
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("director: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - never a traceback unless asked for
        if _debug_requested(argv):
            raise
        click.echo(f"director: internal error: {type(exc).__name__}: {safe_text(exc)}"
                   " (run with --log-level debug for details)", err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)
