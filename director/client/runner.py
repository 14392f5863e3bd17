"""Node-side job running (filled in by the jobs issue)."""

from __future__ import annotations

from typing import Any


class JobRunner:
    def __init__(self, agent: Any):
        self.agent = agent

    def sockets(self) -> list:
        return []

    def next_deadline(self) -> float:
        return float("inf")

    def on_events(self, events: dict) -> None: ...
    def on_message(self, msg: Any) -> None: ...
    def tick(self) -> None: ...
    def running(self) -> int:
        return 0

    def close(self) -> None: ...
