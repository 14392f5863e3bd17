"""The ZAP policy (director.trust.zap.decide / role_of): who may handshake, as what."""

from __future__ import annotations

import pytest

from director.trust.zap import ZAP_DOMAIN, Decision, Role, ZapGate, decide, role_of

# (state, domain) -> (allowed, role, reason fragment).  The pending queue is not an
# input: a stranger is admitted even when it is full (the registry refuses new pending
# requests then), so strangers cannot block token enrollment.
TABLE = [
    ("accepted", ZAP_DOMAIN, True, Role.NODE, "accepted"),
    ("pending", ZAP_DOMAIN, True, Role.PENDING, "pending"),
    ("rejected", ZAP_DOMAIN, False, None, "rejected"),
    ("revoked", ZAP_DOMAIN, False, None, "revoked"),
    (None, ZAP_DOMAIN, True, Role.STRANGER, "enrollment only"),
    ("bogus", ZAP_DOMAIN, False, None, "unknown key state"),
    ("", ZAP_DOMAIN, False, None, "unknown key state"),
    ("ACCEPTED", ZAP_DOMAIN, False, None, "unknown key state"),
]
DOMAINS = ["", "other", ZAP_DOMAIN.upper(), ZAP_DOMAIN + " ", "global"]


@pytest.mark.parametrize("state,domain,allowed,role,reason", TABLE)
def test_decide_table(state, domain, allowed, role, reason) -> None:
    d = decide(state, domain=domain)
    assert isinstance(d, Decision)
    assert (d.allowed, d.role) == (allowed, role)
    assert reason in d.reason


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("state", ["accepted", "pending", "rejected", "revoked", None])
def test_wrong_domain_is_always_refused(state, domain) -> None:
    d = decide(state, domain=domain)
    assert d == Decision(False, None, "wrong ZAP domain")


@pytest.mark.parametrize("state,role", [
    ("accepted", Role.NODE), ("pending", Role.PENDING), (None, Role.STRANGER),
    ("rejected", None), ("revoked", None), ("bogus", None), ("", None),
])
def test_role_of(state, role) -> None:
    assert role_of(state) is role


@pytest.mark.parametrize("state", ["accepted", "pending", "rejected", "revoked", None])
def test_role_of_agrees_with_decide(state) -> None:
    d = decide(state, domain=ZAP_DOMAIN)
    assert role_of(state) is d.role
    assert (role_of(state) is not None) == d.allowed


def test_gate_callback_uses_current_state_and_counts_refusals() -> None:
    states = {"A" * 40: "accepted"}
    gate = ZapGate(None, states.get)
    assert gate.callback(ZAP_DOMAIN, b"A" * 40) is True           # bytes key
    assert gate.callback(ZAP_DOMAIN, "B" * 40) is True            # stranger: may bring a token
    assert gate.denied == 0
    assert gate.callback("other", "A" * 40) is False
    states["A" * 40] = "revoked"                                   # state read on every call
    assert gate.callback(ZAP_DOMAIN, "A" * 40) is False
    assert gate.denied == 2
    assert not gate.is_alive()


def test_a_flood_of_refused_handshakes_logs_one_line(caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="director.zap")
    gate = ZapGate(None, {"R" * 40: "revoked"}.get)
    for _ in range(1000):
        assert gate.callback(ZAP_DOMAIN, "R" * 40) is False
    assert gate.denied == 1000
    assert len([r for r in caplog.records if "handshake refused" in r.getMessage()]) == 1
