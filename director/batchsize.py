"""How ``--batch N|P%`` and ``--max-failures N|P%`` are written: parsed into a
``Share`` (a count or a percentage of the targets), or one ConfigError line naming
what is wrong.  Pure: the CLI, the API and the server (which gets the text again
from the control socket) all check the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from director.errors import ConfigError

MAX_COUNT = 10_000_000
_SHARE = re.compile(r"(\d{1,9})(%?)")


@dataclass(frozen=True)
class Share:
    """``count`` targets, or ``percent`` of them (exactly one is set)."""

    text: str
    count: int | None = None
    percent: int | None = None

    def of(self, total: int) -> int:
        """How many of ``total`` targets this is: a percentage rounds up, to at least 1
        (a zero count stays 0: ``--max-failures 0`` tolerates no failure)."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        if self.percent == 0:
            return 0
        return max(1, -(-self.percent * total // 100))


def parse_share(text: Any, option: str, zero_ok: bool = False) -> Share:
    """``N`` (a whole number, at least 1 -- or 0 when ``zero_ok``) or ``P%`` (1-100,
    or 0-100 when ``zero_ok``); anything else is one ConfigError line."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    spec = text.strip() if isinstance(text, str) else ""
    match = _SHARE.fullmatch(spec)
    least = 0 if zero_ok else 1
    if match is not None:
        value, pct = int(match.group(1)), bool(match.group(2))
        if pct and least <= value <= 100:
            return Share(spec, percent=value)
        if not pct and least <= value <= MAX_COUNT:
            return Share(spec, count=value)
    shown = repr(text) if isinstance(text, str) else "that"
    raise ConfigError(f"{option} {shown[:40]} is not a number of targets N ({least} or more)"
                      f" or a percentage P% ({least}-100%)")


def rollout_options(batch: Any, max_failures: Any) -> dict[str, str]:
    """The submission's rollout arguments, checked: ``{"batch": ..., "max_failures": ...}``
    (empty when neither is given).  ``--max-failures`` needs ``--batch``: with every
    target started at once there is no later batch to hold back."""
    out: dict[str, str] = {}
    if batch is not None:
        out["batch"] = parse_share(batch, "--batch").text
    if max_failures is not None:
        if batch is None:
            raise ConfigError("--max-failures needs --batch (without it every target starts"
                              " at once, so there is no later batch to stop)")
        out["max_failures"] = parse_share(max_failures, "--max-failures", zero_ok=True).text
    return out
