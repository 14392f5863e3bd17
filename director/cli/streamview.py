"""Printing ``--stream`` output: ``NODE: line`` as lines come, in order per node.

Pieces from a node may end mid-line; the rest of such a line is held until its end
arrives (or the job ends).  Everything printed is node data: escapes and control
characters are stripped (``--json`` keeps the raw text, JSON-escaped, one object
per line).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from director.cli.output import safe_text


class StreamPrinter:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.partial: dict[tuple[str, str, str], str] = {}   # (node, job, stream) -> text

    def update(self, event: str, data: dict) -> None:
        if event != "output":
            return
        node = data.get("node")
        items = data.get("items")
        if not isinstance(node, str) or not isinstance(items, list):
            return
        for item in items:
            if not (isinstance(item, list) and len(item) == 3
                    and all(isinstance(x, str) for x in item)):
                continue
            job, stream, text = item
            key = (node, job, stream)
            text = self.partial.pop(key, "") + text
            lines = text.split("\n")
            if lines[-1]:
                self.partial[key] = lines[-1]
            for line in lines[:-1]:
                self._line(node, job, stream, line)
        sys.stdout.flush()

    def close(self) -> None:
        """The work ended: lines still without their newline are shown as they are."""
        for (node, job, stream), text in sorted(self.partial.items()):
            self._line(node, job, stream, text)
        self.partial.clear()
        sys.stdout.flush()

    def _line(self, node: str, job: str, stream: str, line: str) -> None:
        if self.as_json:
            doc: dict[str, Any] = {"node": node, "job": job, "stream": stream, "line": line}
            sys.stdout.write(json.dumps(doc) + "\n")
        else:
            out = sys.stdout if stream == "out" else sys.stderr
            out.write(f"{safe_text(node, inline=True)}: {safe_text(line, inline=True)}\n")
