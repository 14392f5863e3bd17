"""Where the agent's results wait before they leave: batched (at most RESULT_BATCH per
message, well under the frame limit), and every one the server has not acknowledged
sent again once a (re)connection is accepted.  Part of the agent core (a mixin of
AgentCore): the journal keeps each until its ACK.
"""

from __future__ import annotations

from typing import Any

from director.client.actions import Send
from director.client.results import size_of
from director.protocol import messages as M

RESULT_BATCH = 64        # results in one RESULTS message at most
RESULT_BYTES = 2 * 1024 * 1024  # characters of output in one RESULTS message at most


class Outbox:
    """Needs the core's ``outbox``, ``outbox_size``, ``outbox_since``, ``journal``,
    ``_out`` and ``_take``."""

    outbox: list[M.Result]
    outbox_size: int
    outbox_since: float
    journal: Any
    _out: list

    def _resend_unacked(self, now: float) -> None:
        """Accepted on a (re)connection: every result the server has not acknowledged
        goes again (what waited in the outbox is among them), in bounded batches."""
        self.outbox, self.outbox_size = [], 0
        for result in self.journal.unacked():
            self._result(result, now)

    def _result(self, result: M.Result, now: float) -> None:
        size = size_of(result)
        if self.outbox and self.outbox_size + size > RESULT_BYTES:
            self._flush()  # a message stays well under the frame limit
        if not self.outbox:
            self.outbox_since = now
        self.outbox.append(result)
        self.outbox_size += size
        if len(self.outbox) >= RESULT_BATCH:
            self._flush()

    def _flush(self) -> None:
        out, self.outbox, self.outbox_size = self.outbox, [], 0
        if len(out) == 1:
            self._out.append(Send(out[0]))
        else:
            self._out.append(Send(M.Results(tuple(out))))

    def flush(self) -> list:
        """Send every queued result now (the agent is stopping)."""
        if self.outbox:
            self._flush()
        return self._take()
