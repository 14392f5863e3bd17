"""Commands that fit director into a machine: ``systemd`` unit files and shell completion."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("role", type=click.Choice(["server", "client"]))
@click.option("--home", "unit_home", default=None,
              help="State directory the service uses (default /var/lib/director).")
@click.option("--user", default=None, help="Run the service as this user (default root).")
@click.pass_obj
def systemd(obj, role: str, unit_home: str | None, user: str | None) -> None:
    """Print a hardened systemd unit for the server or the client.

    \b
    director systemd server --user director | sudo tee /etc/systemd/system/director-server.service
    """
    from director.cli import systemd as units

    try:
        home = unit_home or obj.cli.get("home")  # the global --home, when given
        click.echo(units.render(role, home=home, user=user), nl=False)
    except units.UnitError as exc:
        raise click.UsageError(str(exc)) from None


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script (bash, zsh or fish).

    \b
    bash: director completion bash > ~/.local/share/bash-completion/completions/director
    zsh:  director completion zsh > ~/.director-complete.zsh   (source it in ~/.zshrc)
    fish: director completion fish > ~/.config/fish/completions/director.fish
    """
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    root = ctx.find_root().command
    click.echo(cls(root, {}, "director", "_DIRECTOR_COMPLETE").source())


COMMANDS = [systemd, completion]
