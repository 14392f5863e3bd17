"""Node keys and enrollment: who is who, and how a key becomes trusted.

A key's identity is its public key.  Names are labels bound to one key; a
second key asking for a taken name is refused and the holder is untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from director.errors import DirectorError, NameError_, TokenError
from director.trust.keyfmt import fingerprint, z85_to_key
from director.trust.names import validate_name
from director.trust.tokens import JoinToken, TokenRecord, check, hash_secret, new_token

log = logging.getLogger("director.registry")

STATES = ("accepted", "pending", "rejected", "revoked")


@dataclass(frozen=True)
class EnrollOutcome:
    state: str          # accepted | pending | refused
    name: str
    reason: str = ""
    event: str = ""     # the security event it makes ("" for a repeat of a known answer)


class KeyTable:
    """key -> (state, name) in memory: the ZAP thread and the per-message role check
    read it without touching the database.  Single dict operations are atomic
    under the GIL, so the ZAP thread's reads need no lock; only the loop writes."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self.pending = 0

    def set(self, key: str, state: str | None, name: str | None = None) -> None:
        old = self._states.get(key)
        if state is None:
            self._states.pop(key, None)
            self._names.pop(key, None)
        else:
            self._states[key] = state
            if name is not None:
                self._names[key] = name
        self.pending += (state == "pending") - (old == "pending")

    def state(self, key: str) -> str | None:
        return self._states.get(key)

    def name(self, key: str) -> str | None:
        return self._names.get(key)

    def pending_count(self) -> int:
        return self.pending


class Registry:
    """Enrollment and key-state rules; ``db`` is the core's store (see store.py)."""

    def __init__(self, db: Any, keys: KeyTable, server_key: bytes, max_pending: int):
        self.db = db
        self.keys = keys
        self.server_key = server_key
        self.max_pending = max_pending
        for rec in db.nodes():
            keys.set(rec.key, rec.state, rec.name)

    # -- enrollment ----------------------------------------------------------
    def enroll(self, key: str, name: str, token_text: str | None, now: float) -> EnrollOutcome:
        try:
            name = validate_name(name)
        except NameError_ as exc:
            return EnrollOutcome("refused", name[:64], str(exc), "enroll_refused")
        existing = self.db.node_by_key(key)
        if existing is not None and existing.state == "accepted":
            return EnrollOutcome("accepted", existing.name)
        if existing is not None and existing.state in ("rejected", "revoked"):
            return EnrollOutcome("refused", existing.name, f"this key was {existing.state}",
                                 "enroll_refused")
        holder = self.db.node_by_name(name)
        if holder is not None and holder.key != key:
            return EnrollOutcome(
                "refused", name,
                f"name '{name}' is already held by another key ({holder.fingerprint});"
                " choose another --name or ask the operator to delete that node",
                "name_conflict",
            )
        if token_text:
            try:
                self._redeem(token_text, now)
            except TokenError as exc:
                return EnrollOutcome("refused", name, str(exc), "token_refused")
            if existing is None:
                self.db.add_node(key, name, "accepted", fingerprint(z85_to_key(key)))
            else:
                self.db.set_state(key, "accepted")
                name = existing.name
            self.keys.set(key, "accepted", name)
            log.info("node %s enrolled by token (%s)", name, fingerprint(z85_to_key(key)))
            return EnrollOutcome("accepted", name, "", "token_used")
        if existing is not None:  # pending, asking again
            return EnrollOutcome("pending", existing.name,
                                 "waiting for an operator: director keys accept " + existing.name)
        if self.keys.pending_count() >= self.max_pending:
            return EnrollOutcome("refused", name, "too many pending enrollments; try later",
                                 "enroll_refused")
        self.db.add_node(key, name, "pending", fingerprint(z85_to_key(key)))
        self.keys.set(key, "pending", name)
        log.info("node %s asks to join (%s), pending", name, fingerprint(z85_to_key(key)))
        return EnrollOutcome("pending", name,
                             "waiting for an operator: director keys accept " + name,
                             "enroll_pending")

    def _redeem(self, token_text: str, now: float) -> None:
        token = JoinToken.decode(token_text)
        if token.server_key != self.server_key:
            raise TokenError("this token was made by another server")
        check(self.db.token(token.token_id), token, now)
        self.db.use_token(token.token_id)

    # -- operator actions ----------------------------------------------------
    def find(self, name: str) -> Any:
        rec = self.db.node_by_name(name)
        if rec is None:
            raise DirectorError(f"no node named '{name}' (see: director keys list)")
        return rec

    def set_state(self, name: str, state: str) -> Any:
        rec = self.find(name)
        allowed = {
            "accepted": ("pending", "rejected", "accepted"),
            "rejected": ("pending", "rejected", "accepted"),
            "revoked": ("accepted", "pending", "revoked", "rejected"),
        }[state]
        if rec.state not in allowed:
            hint = " (delete it, then let the node enroll again)" if rec.state == "revoked" else ""
            raise DirectorError(f"node '{name}' is {rec.state}; cannot mark it {state}{hint}")
        self.db.set_state(rec.key, state)
        self.keys.set(rec.key, state, rec.name)
        log.info("node %s is now %s", name, state)
        return self.db.node_by_key(rec.key)  # type: ignore[return-value]

    def delete(self, name: str) -> Any:
        rec = self.find(name)
        self.db.delete_node(rec.key)
        self.keys.set(rec.key, None)
        log.info("node %s deleted", name)
        return rec

    # -- tokens ----------------------------------------------------------------
    def create_token(self, ttl: float, uses: int, now: float) -> tuple[JoinToken, TokenRecord]:
        token = new_token(self.server_key)
        rec = TokenRecord(token_id=token.token_id, secret_hash=hash_secret(token.secret),
                          created=now, expires=now + ttl, uses_left=uses)
        self.db.add_token(rec)
        log.info("join token %s created (%d use(s))", token.token_id, uses)
        return token, rec

    def revoke_token(self, token_id: str) -> None:
        if not self.db.revoke_token(token_id):
            raise DirectorError(f"no token with id '{token_id}' (see: director token list)")
        log.info("join token %s revoked", token_id)
