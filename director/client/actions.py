"""What the agent core asks its drivers to do: plain values, carried out in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from director.protocol.messages import CtlReply, Job, Msg


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``msg`` to the server on the agent's link."""

    msg: Msg


@dataclass(frozen=True, slots=True)
class StartRun:
    """Run ``job`` (a RUN, or a verb that ends at once: ARG, ENV, WORKDIR, cache hits);
    the driver reports its end with ``AgentCore.job_ended``."""

    job: Job


@dataclass(frozen=True, slots=True)
class StartCopy:
    """Pull and apply a COPY/ADD off the event loop; its end comes back the same way."""

    job: Job


@dataclass(frozen=True, slots=True)
class StopJob:
    """The operator cancelled this running job: kill its process group, or make its
    COPY give up; its end comes back through ``AgentCore.job_ended`` as usual."""

    job_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the agent: restarting will not help (refused, revoked, unknown key)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer the control request that came from ``ident``."""

    ident: Any
    msg: CtlReply
