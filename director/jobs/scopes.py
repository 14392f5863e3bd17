"""ARG, ENV and WORKDIR per submission: each ``exec`` or ``orchestrate`` run starts from
the node's defaults and its values apply to its later lines only (CONTRACT.md, "Scope
of ARG, ENV and WORKDIR"), like a Containerfile build.

A submission is named by its orchestration id, the first part of each job's lane.
Its values persist in ``HOME/scopes/ORCH.json`` (written only when one changes), so an
agent restarted in the middle of an orchestration goes on with them; the newest
``KEEP`` scopes are kept (in memory and on disk), older ones are forgotten.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from director.jobs.nodestate import NodeState

KEEP = 256          # submissions whose values are kept
PRUNE_EVERY = 64    # new scopes between looks at the files on disk


class Scopes:
    """NodeState per submission; ``scope(lane)`` is the one a job of that lane uses."""

    def __init__(self, home: Path, keep: int = KEEP):
        self.home = Path(home)
        self.dir = self.home / "scopes"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.keep = keep
        self.lock = threading.Lock()
        self.live: OrderedDict[str, NodeState] = OrderedDict()
        self._new = 0
        self._prune()

    def scope(self, lane: str) -> NodeState:
        orch = lane.split(".", 1)[0]
        with self.lock:
            state = self.live.get(orch)
            if state is not None:
                self.live.move_to_end(orch)
                return state
            state = NodeState(self.home, path=self.dir / f"{orch}.json")
            self.live[orch] = state
            if len(self.live) > self.keep:
                self.live.popitem(last=False)
            self._new += 1
            if self._new % PRUNE_EVERY == 0:
                self._prune()
            return state

    def _prune(self) -> None:
        """Forget the files of all but the newest ``keep`` scopes."""
        try:
            files = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for path in files[:max(0, len(files) - self.keep)]:
            try:
                os.unlink(path)
            except OSError:
                pass


def state_for(states: Any, lane: str) -> Any:
    """The state a job of ``lane`` uses: its submission's scope (or ``states`` itself
    when it is one NodeState, as in unit tests of the drivers)."""
    return states.scope(lane) if isinstance(states, Scopes) else states
