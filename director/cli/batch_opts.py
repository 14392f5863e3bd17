"""``--batch`` and ``--max-failures`` on ``exec`` and ``orchestrate`` (rolling deploys).

Each value is checked as it is parsed (director/batchsize.py); ``director.api`` checks
them together before anything is sent, and the server checks them again."""

from __future__ import annotations

import click


def _checked(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A bad value is one line even where it is not sent (``--dry-run``)."""
    if value is not None:
        from director.batchsize import parse_share

        parse_share(value, f"--{param.name.replace('_', '-')}",
                    zero_ok=param.name == "max_failures")
    return value


_BATCH = click.option(
    "--batch", "batch", metavar="N|P%", default=None, callback=_checked,
    help="Run on N targets (or P% of them, rounded up) at a time; the next batch starts"
    " when every task of the last one has ended.")
_MAX_FAILURES = click.option(
    "--max-failures", "max_failures", metavar="N|P%", default=None, callback=_checked,
    help="With --batch: start no further batch once more than N targets (or P%) failed;"
    " the rest end 'cancelled', saying why (0: stop at the first failure).")


def rollout_options(command):
    """Both options on ``command`` (passed to it as ``batch`` and ``max_failures``)."""
    return _BATCH(_MAX_FAILURES(command))
