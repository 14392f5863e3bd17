"""Tables, JSON and times for the terminal.  Only presentation lives here."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable, Sequence


def emit_json(doc: Any) -> None:
    """Indented for a person at a terminal; compact (C encoder, ~10x faster) for pipes."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(doc, indent=indent, default=str) + "\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "") -> str:
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    if not rows and empty:
        return empty
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*headers).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    d = max(0.0, (now or time.time()) - ts)
    if d < 1:
        return "just now"
    if d < 90:
        return f"{d:.0f}s ago"
    if d < 5400:
        return f"{d / 60:.0f}m ago"
    if d < 172800:
        return f"{d / 3600:.0f}h ago"
    return f"{d / 86400:.0f}d ago"


def until(ts: float, now: float | None = None) -> str:
    d = ts - (now or time.time())
    if d <= 0:
        return "expired"
    if d < 90:
        return f"in {d:.0f}s"
    if d < 5400:
        return f"in {d / 60:.0f}m"
    return f"in {d / 3600:.1f}h"


def seconds(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 1:
        return f"{v * 1000:.1f}ms"
    return f"{v:.2f}s"
