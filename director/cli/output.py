"""Tables, JSON and times for the terminal.  Only presentation lives here.

Whatever came from a node or the server (names, versions, addresses, job output, errors)
goes through ``safe_text`` before it reaches a terminal: no escape sequence or control
character a peer sent can retitle the window, write the clipboard or redraw the screen.
``--json`` prints the raw strings, JSON-escaped (``emit_json``: strict JSON, no NaN).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from typing import Any, Iterable, Sequence

# Escape sequences, 7-bit (ESC ...) and 8-bit (C1) forms.  A string sequence with no
# terminator runs to the end of the text, as a terminal would swallow it.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"        # CSI
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])"                    # OSC DCS SOS PM APC
    r"[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"                       # ... to BEL or ST
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"                               # other ESC sequences
)
# Control characters but newline and tab (so also CR, backspace, DEL and C1), and the
# Unicode bidirectional controls that reorder what is shown ("Trojan Source").
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_INLINE = re.compile(r"[\n\t]")


def safe_text(value: Any, *, inline: bool = False) -> str:
    """``value`` as text fit for a terminal: every escape sequence and control character
    removed but newline and tab (with ``inline``, for a table cell or one line, those
    become spaces too).  Use it on everything a peer sent before printing it."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if not text.isprintable():  # fast path: most text has nothing to remove
        text = _CONTROLS.sub("", _ESCAPES.sub("", text))
        if inline:
            text = _INLINE.sub(" ", text)
    return text


def _finite(doc: Any) -> Any:
    """``doc`` with NaN/Infinity (which strict JSON has no words for) as null."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: _finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite(v) for v in doc]
    return doc


def emit_json(doc: Any) -> None:
    """Indented for a person at a terminal; compact (C encoder, ~10x faster) for pipes.

    Always strict JSON: a non-finite number (never expected) is written as null.
    """
    indent = 2 if sys.stdout.isatty() else None
    try:
        text = json.dumps(doc, indent=indent, default=str, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(doc), indent=indent, default=str, allow_nan=False)
    sys.stdout.write(text + "\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "") -> str:
    """Aligned columns; every cell goes through ``safe_text`` (one line each)."""
    rows = [["" if c is None else safe_text(c, inline=True) for c in r] for r in rows]
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
