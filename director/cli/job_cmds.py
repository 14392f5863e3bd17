"""Job commands: exec, orchestrate, jobs, job -- presentation over ``director.api``.

The API parses job lines and files before anything is sent: a bad line is reported
with file:line and no node ever sees any of it.
"""

from __future__ import annotations

import sys

import click

from director.cli import output
from director.cli.batch_opts import rollout_options
from director.cli.dryrun_view import DRY_RUN, show_plan
from director.cli.orchview import Progress as _Progress, count as _count

JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
TARGET = click.option("--target", "-t", "targets", multiple=True,
                      help="Node name or glob (repeatable, or a comma list); overrides"
                      " targets written in a file. Default: every online node.")
WAIT = click.option("--wait", "-w", is_flag=True, help="Wait, show progress, exit 2 on failure.")
STREAM = click.option(
    "--stream", is_flag=True,
    help="Show output lines as they come, as 'NODE: line' (implies --wait; with --json:"
    " one JSON object per line, then one per job).")
ALLOW_OFFLINE = click.option(
    "--allow-offline", is_flag=True,
    help="Queue work for targets that are not online (default: refuse, naming them).")
CANCEL_ON_INTERRUPT = click.option(
    "--cancel-on-interrupt", is_flag=True,
    help="With --wait: Ctrl-C cancels the work (default: it goes on, and its id is shown).")


def _submit(obj, jobs, targets, wait: bool, as_json: bool,
            cancel_on_interrupt: bool = False, allow_offline: bool = False,
            stream: bool = False, **rollout) -> None:
    """Submit through ``director.api`` and show what came back (exit 2 if a job failed)."""
    from director.cli.run_cmds import api_client

    client = api_client(obj)
    if stream:
        _streamed(client, jobs, targets, as_json, cancel_on_interrupt, allow_offline, rollout)
        return
    if not wait:
        _show_submitted(client.submit(jobs, targets, allow_offline=allow_offline, **rollout),
                        as_json)
        return
    progress = _Progress(enabled=sys.stderr.isatty() and not as_json)
    try:
        if as_json and not sys.stdout.isatty():
            # already encoded as compact --json output: pass it through untouched
            raw = client.submit_encoded(jobs, targets, on_event=progress.update,
                                        allow_offline=allow_offline, **rollout)
            sys.stdout.buffer.write(raw.data + b"\n")
            sys.stdout.flush()
            raise SystemExit(2 if raw.failed else 0)
        docs = client.submit(jobs, targets, wait=True, on_event=progress.update,
                             allow_offline=allow_offline, **rollout)
    except KeyboardInterrupt:
        progress.close()
        _interrupted(client, progress, cancel_on_interrupt)
    finally:
        progress.close()
    _show(client, docs, as_json)


def _streamed(client, jobs, targets, as_json: bool, cancel_on_interrupt: bool,
              allow_offline: bool, rollout: dict) -> None:
    """``--stream``: output lines as they come, then the results (JSON: a line each)."""
    import json

    from director.cli.streamview import StreamPrinter

    printer = StreamPrinter(as_json)
    progress = _Progress(enabled=False)  # only to learn the ids, for Ctrl-C

    def on_event(event: str, data: dict) -> None:
        progress.update(event, data)
        printer.update(event, data)
    try:
        docs = client.submit(jobs, targets, wait=True, on_event=on_event,
                             allow_offline=allow_offline, stream=True, **rollout)
    except KeyboardInterrupt:
        printer.close()
        _interrupted(client, progress, cancel_on_interrupt)
    printer.close()
    if as_json:
        for doc in docs:
            sys.stdout.write(json.dumps(doc) + "\n")
    else:
        from director.cli.orchview import show_finished

        show_finished(client, docs)
    raise SystemExit(0 if all(d.ok for d in docs) else 2)


def _interrupted(client, progress: "_Progress", cancel_on_interrupt: bool) -> None:
    """Ctrl-C once work was submitted: cancel it, or say how to follow and stop it."""
    if not progress.jobs:
        raise KeyboardInterrupt  # nothing was submitted: a plain interruption
    if cancel_on_interrupt:
        done = client.cancel(progress.orch or progress.jobs[-1])
        click.echo(f"director: interrupted; {_cancel_line(done)}", err=True)
        raise SystemExit(130) from None
    # as Salt prints the jid: the work goes on, and here is how to find it again
    last = progress.orch if len(progress.jobs) > 1 and progress.orch else progress.jobs[-1]
    click.echo(f"director: interrupted; the jobs go on. Follow them with: director job"
               f" {last} (all {len(progress.jobs)}: director jobs); stop them with:"
               f" director job cancel {progress.orch or last}", err=True)
    raise SystemExit(130) from None


def _show_submitted(sub, as_json: bool) -> None:
    """What was submitted without waiting: its orchestration id (for one job, the job's),
    or the document (with ``id``: that orchestration id)."""
    if as_json:
        output.emit_json({"id": sub.orchestration, "orchestration": sub.orchestration, **sub})
    else:
        click.echo(output.safe_text(sub.orchestration, inline=True))


def _show(client, docs: list, as_json: bool) -> None:
    """Finished jobs: one JSON document, a job's table, or an orchestration's summary;
    exit 2 if any did not succeed."""
    if as_json:
        output.emit_json(docs)
    else:
        from director.cli.orchview import show_finished

        show_finished(client, docs)
    raise SystemExit(0 if all(d.ok for d in docs) else 2)


class _JobLineCommand(click.Command):
    """``exec``: an option click does not know, written after the verb, was meant for the
    job (``director exec RUN --skip-cache true``): say to quote the job line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)  # click's parser consumes the list it parses
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            hint = _quote_hint(given, exc.option_name)
            if hint is None:
                raise
            raise click.UsageError(f"{exc.format_message().rstrip('.')} for exec; {hint}",
                                   ctx) from None


def _quote_hint(args: list[str], option: str) -> str | None:
    """``... quote the whole job line: director exec ... 'VERB ...'`` when ``option``
    comes after a verb word in ``args``; None when it does not (a mistyped exec option)."""
    import shlex

    from director.jobs.verbs import TABLE

    verb_at = next((i for i, a in enumerate(args) if a.upper() in TABLE), None)
    if verb_at is None or not any(a.startswith(option) for a in args[verb_at + 1:]):
        return None  # ('-l' comes from '-la', '--x' from '--x=1')
    line = shlex.quote(" ".join(args[verb_at:]))
    before = " ".join(shlex.quote(a) for a in args[:verb_at])
    return (f"if it is part of the job, quote the whole job line:"
            f" director exec {before + ' ' if before else ''}{line}")


@click.command("exec", cls=_JobLineCommand)
@TARGET
@WAIT
@STREAM
@CANCEL_ON_INTERRUPT
@ALLOW_OFFLINE
@DRY_RUN
@rollout_options
@JSON
@click.argument("job", nargs=-1, required=True)
@click.pass_obj
def exec_(obj, targets, wait: bool, stream: bool, as_json: bool, cancel_on_interrupt: bool,
          allow_offline: bool, job: tuple[str, ...], dry_run: bool = False,
          **rollout) -> None:
    """Run one job line ('RUN uptime') on the targets."""
    if dry_run:
        return show_plan(obj, " ".join(job), targets, as_json, allow_offline)
    _submit(obj, " ".join(job), targets, wait, as_json, cancel_on_interrupt, allow_offline,
            stream, **rollout)


@click.command()
@TARGET
@WAIT
@STREAM
@CANCEL_ON_INTERRUPT
@ALLOW_OFFLINE
@DRY_RUN
@rollout_options
@JSON
@click.argument("files", nargs=-1, required=True)
@click.pass_obj
def orchestrate(obj, targets, wait: bool, stream: bool, as_json: bool,
                cancel_on_interrupt: bool, allow_offline: bool, files: tuple[str, ...],
                dry_run: bool = False, **rollout) -> None:
    """Run Directorfiles or directord-style YAML orchestrations."""
    from pathlib import Path

    if dry_run:
        return show_plan(obj, [Path(f) for f in files], targets, as_json, allow_offline)
    _submit(obj, [Path(f) for f in files], targets, wait, as_json, cancel_on_interrupt,
            allow_offline, stream, **rollout)


@click.group(invoke_without_command=True)
@click.option("--limit", "-n", default=20, show_default=True, help="How many jobs.")
@JSON
@click.pass_context
def jobs(ctx, limit: int, as_json: bool) -> None:
    """Recent jobs: id, verb, targets, status, counts, age (jobs purge: delete old ones)."""
    if ctx.invoked_subcommand is not None:
        return
    obj = ctx.obj
    from director.cli.run_cmds import api_client

    client = api_client(obj)
    if as_json:  # every job, as before (an orchestration's jobs one by one)
        output.emit_json(client.jobs(limit))
        return
    from director.cli.orchview import print_overview

    print_overview(client.overview(limit))


@jobs.command("purge")
@click.option("--older-than", metavar="DURATION",
              help="Delete jobs older than this (30d, 12h, 2w).")
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="Delete all but the newest N jobs.")
@JSON
@click.pass_obj
def jobs_purge(obj, older_than: str | None, keep: int | None, as_json: bool) -> None:
    """Delete finished jobs and their results now (with neither option: as the
    job_retention and job_retention_count settings say). Running jobs are kept."""
    from director.cli.run_cmds import api_client
    from director.values import parse_duration
    from director.errors import ConfigError, DirectorError

    seconds = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ConfigError as exc:
            raise DirectorError(f"--older-than: {exc}") from None
    done = api_client(obj).purge(seconds, keep)  # answered when it is done
    if as_json:
        output.emit_json(done)
    else:
        d = done if isinstance(done, dict) else {}
        click.echo(f"purged {_count(d.get('jobs'))} job(s) and {_count(d.get('results'))}"
                   " result(s)")


class _JobGroup(click.Group):
    """``job ID`` shows a job (``job show ID``); ``job cancel ID`` acts on it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((a for a in args if not a.startswith("-")), None)
        if first is not None and first not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_JobGroup)
def job() -> None:
    """A job's result on each node (job ID|last), or act on it (job cancel ID|last)."""


@job.command("show")
@click.argument("job_id")
@click.option("--all", "every_job", is_flag=True,
              help="For an orchestration: every job's results, not its summary.")
@JSON
@click.pass_obj
def job_show(obj, job_id: str, every_job: bool, as_json: bool) -> None:
    """A job's definition and its result on each node (ID or 'last'); for an
    orchestration, a summary per node with its first failure."""
    from director.cli.orchview import show_job
    from director.cli.run_cmds import api_client

    show_job(api_client(obj), job_id, every_job, as_json)


@job.command("cancel")
@click.argument("job_id")
@JSON
@click.pass_obj
def job_cancel(obj, job_id: str, as_json: bool) -> None:
    """Cancel a job or an orchestration (ID or 'last'): queued tasks end unsent,
    running ones are stopped on their nodes; all end 'cancelled'."""
    from director.cli.run_cmds import api_client

    done = api_client(obj).cancel(job_id)
    if as_json:
        output.emit_json(done)
    else:
        click.echo(_cancel_line(done))


@job.command("retry")
@click.argument("job_id")
@click.option("--failed", is_flag=True,
              help="Only on the nodes where it did not succeed (default: every node).")
@WAIT
@ALLOW_OFFLINE
@JSON
@click.pass_obj
def job_retry(obj, job_id: str, failed: bool, wait: bool, allow_offline: bool,
              as_json: bool) -> None:
    """Run a job or an orchestration (ID or 'last') again, as a new one linked to it."""
    from director.cli.run_cmds import api_client

    client = api_client(obj)
    if not wait:
        _show_submitted(client.retry(job_id, failed=failed, allow_offline=allow_offline),
                        as_json)
        return
    progress = _Progress(enabled=sys.stderr.isatty() and not as_json)
    try:
        docs = client.retry(job_id, failed=failed, wait=True, on_event=progress.update,
                            allow_offline=allow_offline)
    finally:
        progress.close()
    _show(client, docs, as_json)


def _cancel_line(done: object) -> str:
    """What a cancel did, from the server's answer (numbers only: nothing from the wire
    is printed as text)."""
    d = done if isinstance(done, dict) else {}
    queued, running = _count(d.get("cancelled")), _count(d.get("stopping"))
    if not queued and not running:
        return "nothing to cancel: every task had ended"
    return f"cancelled {queued} queued task(s); stopping {running} running"


COMMANDS = [exec_, orchestrate, jobs, job]
