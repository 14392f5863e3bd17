"""The core's side of GET: who may send files, and what a GET's result really is.

A node may offer files and send chunks only for a GET job in flight on it; the
destination is read from the job the server itself holds (never from the node),
and the driver (fetching.py) does the writing.  Since only the server knows what
it received, a GET's result is the server's record: a node that reports success
for a GET the server did not complete gets a failed result, and the transfer
counts are the server's own.  Pure: no I/O.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any, Callable

from cachetools import LRUCache

from director.protocol.fetch import GetData, GetDone, GetOffer
from director.protocol.messages import Result, Transfer, encode
from director.server.events import Send

log = logging.getLogger("director.server")
_GET_MARK = b'"verb":"GET"'   # in a JOB body's compact instruction JSON (strings escape ")


@dataclass(frozen=True, slots=True)
class FetchStart:
    """Action: a node offered files for its GET ``job_id`` into ``dest``/``node``."""

    route: bytes
    key: str
    node: str
    job_id: str
    dest: str
    offer: GetOffer


@dataclass(frozen=True, slots=True)
class FetchChunk:
    """Action: a chunk (or an error) from a node for its GET."""

    route: bytes
    key: str
    data: GetData


@dataclass(frozen=True, slots=True)
class FetchEnd:
    """Action: the node's result for a GET is in; drop what is left of its session."""

    key: str
    job_id: str


class FetchGate:
    """Needs the JobBook (``sched``, ``bodies``), the key's node name and the action list."""

    def __init__(self, jobs: Any, name_of: Callable[[str], str | None], out: list,
                 peer_log: Callable[..., None]):
        self.jobs, self.name_of, self.out, self.peer_log = jobs, name_of, out, peer_log
        # (job id, node key) -> (status, error, transfer) as the driver saw the GET end
        self.records: LRUCache = LRUCache(maxsize=10_000)

    def _refuse(self, key: str, route: bytes, job_id: str, now: float, why: str) -> None:
        self.peer_log(logging.WARNING, key, "foreign_get", now, "refused GET traffic for job"
                      " %s from %s: %s", job_id, self.name_of(key) or key[:8], why)
        self.out.append(Send(route, encode(GetDone(job_id, False, why))))

    def _is_get(self, job_id: str) -> bool:
        body = self.jobs.bodies.get(job_id)
        return body is not None and _GET_MARK in body

    def on_offer(self, key: str, route: bytes, msg: GetOffer, now: float) -> None:
        if not self.jobs.sched.in_flight(key, msg.job_id) or not self._is_get(msg.job_id):
            self._refuse(key, route, msg.job_id, now, "this GET is not in flight on this node")
            return
        instruction = json.loads(self.jobs.bodies[msg.job_id])["instruction"]
        self.out.append(FetchStart(route, key, self.name_of(key) or "", msg.job_id,
                                   instruction.get("dest", ""), msg))

    def on_data(self, key: str, route: bytes, msg: GetData, now: float) -> None:
        if not self.jobs.sched.in_flight(key, msg.job_id):
            return  # late chunks of a job that ended: nothing to say
        self.out.append(FetchChunk(route, key, msg))

    def finished(self, job_id: str, key: str, status: str, error: str,
                 transfer: dict) -> None:
        """The driver's word on how a GET ended (before the node hears it)."""
        self.records[(job_id, key)] = (status, error, transfer)

    def settle(self, key: str, result: Result) -> Result:
        """A node's RESULT for a GET, made the server's: its status and counts."""
        rec = self.records.pop((result.job_id, key), None) if self.records else None
        if rec is None:
            if not self._is_get(result.job_id):
                return result
            self.out.append(FetchEnd(key, result.job_id))
            if result.status != "success":
                return result
            return replace(result, status="failed", rc=None, transfer=None,
                           error="GET: the node reported success, but the server received"
                           " no files from it")
        self.out.append(FetchEnd(key, result.job_id))
        status, error, counts = rec
        transfer = Transfer(**counts) if counts else None
        if status == "success" or result.status in ("cancelled", "timeout"):
            return replace(result, transfer=transfer)
        return replace(result, status="failed", rc=None, error=error, transfer=transfer)
