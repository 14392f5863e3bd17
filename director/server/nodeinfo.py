"""Part of the server core: what nodes say about themselves (facts, at HELLO) and what
operators say about them (labels), and the control operations that show and change it.

Facts heard at HELLO wait in memory (one entry per node, the latest) and are written
in one transaction on the tick, so a thousand nodes reconnecting after a server restart
cost one write, and a storage failure costs nothing but a log line (they are written
when the store works again).  Readers see the pending facts over the stored ones.
Labels are written before the operator is answered: stored, or refused.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from director import labels as L
from director.errors import DirectorError, StorageError

log = logging.getLogger("director.server")


class FactsBook:
    def __init__(self) -> None:
        self.pending: dict[str, str] = {}   # node key -> facts JSON not written yet
        self._failing = False

    def heard(self, key: str, facts: Any) -> None:
        """A HELLO's facts (a ``Facts``, or None from an agent older than facts)."""
        if facts is not None:
            self.pending[key] = json.dumps(facts.to_dict(), sort_keys=True)

    def forget(self, key: str) -> None:
        self.pending.pop(key, None)

    def flush(self, store: Any) -> None:
        if not self.pending:
            return
        try:
            store.put_facts(self.pending)
        except StorageError as exc:
            if not self._failing:
                log.error("cannot record node facts (kept in memory, retried): %s", exc)
            self._failing = True
            return
        self.pending = {}
        self._failing = False

    def facts(self, store: Any, key: str) -> dict[str, Any]:
        text = self.pending.get(key)
        if text is not None:
            return json.loads(text)
        return store.facts_of(key) or {}

    def attrs(self, store: Any, accepted: dict[str, str]) -> dict[str, dict[str, Any]]:
        """name -> {"labels", "facts"} of the accepted nodes (``--target`` selectors)."""
        facts = store.all_facts()
        for key, text in self.pending.items():
            facts[key] = json.loads(text)
        labels = store.all_labels()
        return {name: {"labels": labels.get(key, {}), "facts": facts.get(key, {})}
                for name, key in accepted.items()}


def node_get(core: Any, rid: bytes, args: dict, now: float) -> dict:
    """``director node NAME``: one node's state, facts and labels."""
    rec = core.registry.find(_name(args))
    peer = core.peers.get(rec.key)
    if rec.state == "accepted":
        state = "online" if core.peers.online(rec.key, now) else "offline"
    else:
        state = rec.state
    return {
        "name": rec.name, "state": state,
        "labels": core.store.labels_of(rec.key),
        "facts": core.facts.facts(core.store, rec.key),
        "fingerprint": rec.fingerprint,
        "last_seen": peer.last_seen if peer else rec.last_seen,
        "address": (peer.address if peer and peer.address else rec.address) or "",
        "version": (peer.version if peer and peer.version else rec.version) or "",
    }


def nodes_label(core: Any, rid: bytes, args: dict, now: float) -> dict:
    """``director nodes label NAME KEY=VALUE... --remove KEY``: all checked, then
    stored in one transaction (nothing written when anything is wrong)."""
    rec = core.registry.find(_name(args))
    new = L.change(core.store.labels_of(rec.key), args.get("set", {}),
                   args.get("remove", []))
    core.store.set_labels(rec.key, new)
    log.info("labels of node %s are now: %s", rec.name,
             ", ".join(f"{k}={v}" for k, v in new.items()) or "(none)")
    return {"name": rec.name, "labels": new}


def _name(args: dict) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise DirectorError("a node NAME is required")
    return name
