"""COPY/ADD on the node (the transfer issue fills this in)."""

from __future__ import annotations

from typing import Any

from director.jobs.executor import Outcome


class Copier:
    def __init__(self, agent: Any):
        self.agent = agent

    def sockets(self) -> list:
        return []

    def on_message(self, msg: Any) -> None: ...
    def on_events(self, events: dict) -> None: ...
    def close(self) -> None: ...

    def run(self, job_id: str, instr: Any, workdir: str, body: dict) -> Outcome:
        return Outcome("failed", error="COPY/ADD is not available yet (file transfers are"
                                       " coming in the next release)")
