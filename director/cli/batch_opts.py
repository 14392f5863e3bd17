"""``--batch`` and ``--max-failures`` on ``exec`` and ``orchestrate`` (rolling deploys).

The values stay text here: ``director.api`` checks them (director/batchsize.py) before
anything is sent, and the server checks them again."""

from __future__ import annotations

import click

_BATCH = click.option(
    "--batch", "batch", metavar="N|P%", default=None,
    help="Run on N targets (or P% of them, rounded up) at a time; the next batch starts"
    " when every task of the last one has ended.")
_MAX_FAILURES = click.option(
    "--max-failures", "max_failures", metavar="N|P%", default=None,
    help="With --batch: start no further batch once more than N targets (or P%) failed;"
    " the rest end 'cancelled', saying why (0: stop at the first failure).")


def rollout_options(command):
    """Both options on ``command`` (passed to it as ``batch`` and ``max_failures``)."""
    return _BATCH(_MAX_FAILURES(command))
