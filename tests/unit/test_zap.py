"""The ZAP policy (director.trust.zap.decide / role_of): who may handshake, as what."""

from __future__ import annotations

import pytest

from director.trust.zap import ZAP_DOMAIN, Decision, Role, ZapGate, decide, role_of

# (state, domain, pending, max_pending) -> (allowed, role, reason fragment)
TABLE = [
    ("accepted", ZAP_DOMAIN, 0, 10, True, Role.NODE, "accepted"),
    ("accepted", ZAP_DOMAIN, 10, 10, True, Role.NODE, "accepted"),    # full queue: no matter
    ("pending", ZAP_DOMAIN, 0, 10, True, Role.PENDING, "pending"),
    ("pending", ZAP_DOMAIN, 10, 10, True, Role.PENDING, "pending"),   # already queued
    ("rejected", ZAP_DOMAIN, 0, 10, False, None, "rejected"),
    ("revoked", ZAP_DOMAIN, 0, 10, False, None, "revoked"),
    (None, ZAP_DOMAIN, 0, 10, True, Role.STRANGER, "enrollment only"),
    (None, ZAP_DOMAIN, 9, 10, True, Role.STRANGER, "enrollment only"),
    (None, ZAP_DOMAIN, 10, 10, True, Role.STRANGER, "enrollment only"),  # full queue: the
    (None, ZAP_DOMAIN, 11, 10, True, Role.STRANGER, "enrollment only"),  # registry decides
    ("bogus", ZAP_DOMAIN, 0, 10, False, None, "unknown key state"),
    ("", ZAP_DOMAIN, 0, 10, False, None, "unknown key state"),
    ("ACCEPTED", ZAP_DOMAIN, 0, 10, False, None, "unknown key state"),
]
DOMAINS = ["", "other", ZAP_DOMAIN.upper(), ZAP_DOMAIN + " ", "global"]


@pytest.mark.parametrize("state,domain,pending,maxp,allowed,role,reason", TABLE)
def test_decide_table(state, domain, pending, maxp, allowed, role, reason) -> None:
    d = decide(state, domain=domain, pending_count=pending, max_pending=maxp)
    assert isinstance(d, Decision)
    assert (d.allowed, d.role) == (allowed, role)
    assert reason in d.reason


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("state", ["accepted", "pending", "rejected", "revoked", None])
def test_wrong_domain_is_always_refused(state, domain) -> None:
    d = decide(state, domain=domain, pending_count=0, max_pending=10)
    assert d == Decision(False, None, "wrong ZAP domain")


@pytest.mark.parametrize("state,role", [
    ("accepted", Role.NODE), ("pending", Role.PENDING), (None, Role.STRANGER),
    ("rejected", None), ("revoked", None), ("bogus", None), ("", None),
])
def test_role_of(state, role) -> None:
    assert role_of(state) is role


@pytest.mark.parametrize("state", ["accepted", "pending", "rejected", "revoked", None])
def test_role_of_agrees_with_decide(state) -> None:
    d = decide(state, domain=ZAP_DOMAIN, pending_count=0, max_pending=10)
    assert role_of(state) is d.role
    assert (role_of(state) is not None) == d.allowed


def test_gate_callback_uses_current_state_and_counts_refusals() -> None:
    states = {"A" * 40: "accepted"}
    counts = [0, 2]
    gate = ZapGate(None, states.get, lambda: tuple(counts))
    assert gate.callback(ZAP_DOMAIN, b"A" * 40) is True           # bytes key
    assert gate.callback(ZAP_DOMAIN, "B" * 40) is True            # stranger, room in queue
    assert gate.denied == 0
    assert gate.callback("other", "A" * 40) is False
    states["A" * 40] = "revoked"                                   # state read on every call
    assert gate.callback(ZAP_DOMAIN, "A" * 40) is False
    counts[0] = 2                                                  # queue now full:
    assert gate.callback(ZAP_DOMAIN, "B" * 40) is True            # still may bring a token
    assert gate.denied == 2
    assert not gate.is_alive()
