"""Node facts: the HELLO field's bounds (protocol/facts.py), what an agent gathers
(client/facts.py), and facts reaching a RUN only as shell-quoted data (plan.resolve)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from director.client import facts as gather
from director.errors import ProtocolError
from director.jobs.dsl import parse_line
from director.jobs.plan import resolve
from director.protocol import facts as PF
from director.protocol import frames
from director.protocol import messages as M

FULL = PF.Facts("web1.example", "debian", "12", "6.1.0-18-amd64", "x86_64", 8, 16 * 2**30,
                ("10.0.0.5", "fe80::1"), "0.1.0")


def hello_frames(body: dict) -> list[bytes]:
    return frames.join("HELLO", json.dumps(body).encode())


def decode_facts(facts) -> PF.Facts | None:
    msg = M.decode(hello_frames({"name": "web1", "version": "1", "facts": facts}))
    assert isinstance(msg, M.Hello)
    return msg.facts


def test_a_hello_with_facts_round_trips():
    hello = M.Hello("web1", "0.1.0", "boot", FULL)
    assert M.decode(M.encode(hello)) == hello
    assert FULL.to_dict() == {
        "hostname": "web1.example", "os": {"id": "debian", "version": "12"},
        "kernel": "6.1.0-18-amd64", "arch": "x86_64", "cpus": 8, "memory": 16 * 2**30,
        "addresses": ["10.0.0.5", "fe80::1"], "version": "0.1.0"}


def test_a_hello_without_facts_still_decodes():
    msg = M.decode(hello_frames({"name": "web1", "version": "0.0.9", "boot": "b"}))
    assert msg == M.Hello("web1", "0.0.9", "b") and msg.facts is None
    assert M.decode(hello_frames({"name": "w", "version": "1", "facts": None})).facts is None


def test_every_fact_is_optional_and_unknown_ones_are_ignored():
    assert decode_facts({}) == PF.Facts()
    assert decode_facts({"gpu": "x" * 10_000, "cpus": 2}) == PF.Facts(cpus=2)
    assert decode_facts({"os": {"id": "alpine"}}).to_dict() == {"os": {"id": "alpine"}}


@pytest.mark.parametrize(("facts", "field"), [
    ("not an object", "'facts'"),
    ({"hostname": "h" * (PF.MAX_HOSTNAME + 1)}, "'hostname'"),
    ({"hostname": "a\x1b]0;owned\x07"}, "'hostname'"),
    ({"hostname": 5}, "'hostname'"),
    ({"kernel": "k\nnext"}, "'kernel'"),
    ({"arch": "a" * (PF.MAX_ARCH + 1)}, "'arch'"),
    ({"os": "debian"}, "'os'"),
    ({"os": {"id": "d" * (PF.MAX_OS_PART + 1)}}, "'id'"),
    ({"os": {"version": ["12"]}}, "'version'"),
    ({"cpus": 0}, "'cpus'"),
    ({"cpus": True}, "'cpus'"),
    ({"cpus": 2.5}, "'cpus'"),
    ({"memory": -1}, "'memory'"),
    ({"memory": 2**64}, "'memory'"),
    ({"addresses": "10.0.0.1"}, "'addresses'"),
    ({"addresses": ["10.0.0.1", "not-an-ip"]}, "'addresses'"),
    ({"addresses": ["$(reboot)"]}, "'addresses'"),
    ({"addresses": [1]}, "'addresses'"),
    ({"addresses": ["10.0.0.1"] * (PF.MAX_ADDRESSES + 1)}, "'addresses'"),
    ({"version": "v" * 65}, "'version'"),
])
def test_out_of_bounds_facts_are_refused_naming_the_fact(facts, field):
    with pytest.raises(ProtocolError, match=field) as err:
        decode_facts(facts)
    assert str(err.value).startswith("HELLO")


@pytest.mark.parametrize("bad", [PF.Facts(cpus=0), PF.Facts(hostname="a\x00b"),
                                 PF.Facts(addresses=("10.0.0.300",))])
def test_a_buggy_agent_never_sends_facts_out_of_bounds(bad):
    with pytest.raises(ProtocolError, match="refusing to send HELLO"):
        M.encode(M.Hello("web1", "1", None, bad))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20)
FACT_KEYS = st.sampled_from(["hostname", "os", "kernel", "arch", "cpus", "memory",
                             "addresses", "version", "id", "other"])
FACTS = JSON | st.dictionaries(FACT_KEYS, JSON | st.dictionaries(
    st.sampled_from(["id", "version", "x"]), JSON, max_size=3), max_size=9)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FACTS)
def test_junk_in_hello_facts_raises_nothing_but_a_protocol_error(facts):
    try:
        body = json.dumps({"name": "web1", "version": "1", "facts": facts}).encode()
    except ValueError:
        return
    try:
        msg = M.decode(frames.join("HELLO", body))
    except ProtocolError:
        return
    assert M.decode(M.encode(msg)) == msg  # what decodes is within bounds: it re-encodes
    if msg.facts is not None:
        assert all(PF.MAX_ADDRESS >= len(a) for a in msg.facts.addresses)
        assert msg.facts.cpus is None or 1 <= msg.facts.cpus <= PF.MAX_CPUS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_junk_bytes_as_a_hello_body_raise_only_protocol_errors(raw):
    try:
        M.decode(frames.join("HELLO", b'{"name":"w","version":"1","facts":' + raw + b"}"))
    except ProtocolError:
        pass


# -- what an agent gathers ------------------------------------------------------------
def test_the_agent_gathers_its_facts_and_they_pass_the_bounds():
    facts = gather.collect("9.9.9")
    assert facts.version == "9.9.9"
    assert facts.hostname == socket.gethostname()
    assert facts.cpus and facts.cpus >= 1 and facts.memory and facts.memory > 0
    assert facts.kernel and facts.arch
    hello = M.Hello("web1", "9.9.9", "b", facts)
    assert M.decode(M.encode(hello)) == hello
    assert not any(a.startswith("127.") or a == "::1" for a in facts.addresses)


def test_a_fact_that_cannot_be_read_or_is_out_of_bounds_is_absent(monkeypatch):
    def broken():
        raise OSError("no such thing")
    monkeypatch.setattr(gather.socket, "gethostname", broken)
    monkeypatch.setattr(gather.platform, "machine", lambda: "a\x1b[2J")
    monkeypatch.setattr(gather.os, "cpu_count", lambda: None)
    facts = gather.collect()
    assert facts.hostname is None and facts.arch is None and facts.cpus is None
    assert facts.kernel  # the others are still there
    assert M.decode(M.encode(M.Hello("w", "1", None, facts))).facts == facts


def test_os_release_is_read_for_id_and_version(tmp_path, monkeypatch):
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                 'VERSION_ID="12"\nVERSION_CODENAME=bookworm\n')
    monkeypatch.setattr(gather, "OS_RELEASE", (tmp_path / "missing", f))
    assert gather.os_release() == {"id": "debian", "version": "12"}
    f.write_text("ID=arch\n")  # a rolling release has no VERSION_ID
    assert gather.os_release() == {"id": "arch"}
    monkeypatch.setattr(gather, "OS_RELEASE", (tmp_path / "missing",))
    assert gather.os_release() is None


# -- facts in templates are data ------------------------------------------------------
def sh(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                          cwd=cwd, timeout=10)


@pytest.mark.parametrize("hostile", [
    "x; touch pwned", "$(touch pwned)", "`touch pwned`", "a' ; touch pwned; '",
    'a" && touch pwned #'])
def test_a_fact_in_a_run_is_shell_quoted_and_runs_nothing(tmp_path, hostile):
    scope = {"facts": {"hostname": hostile, "os": {"id": "debian"}, "cpus": 4}}
    for line in ("RUN echo {{ facts.hostname }}", 'RUN echo "{{ facts.hostname }}"',
                 "RUN echo {{ facts.hostname }}-{{ facts.os.id }}-{{ facts.cpus }}"):
        command = resolve(parse_line(line), {}, {}, scope).command
        out = sh(command, tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(hostile)
        assert not (tmp_path / "pwned").exists(), (line, command)


def test_a_template_sees_this_nodes_facts():
    scope = {"facts": FULL.to_dict()}
    assert resolve(parse_line("RUN echo {{ facts.hostname }}"), {}, {}, scope).command == \
        "echo web1.example"
    line = "RUN echo {% if facts.os.id == 'debian' %}apt{% else %}dnf{% endif %}"
    assert resolve(parse_line(line), {}, {}, scope).command == "echo apt"


def test_the_agent_says_its_facts_at_every_hello():
    from director.client.core import AgentCore, Send

    core = AgentCore("web1", "b00t", 1.0, 0.0, version="9.9", facts=FULL)
    for now in (0.0, 5.0):  # the first link, and a reconnection
        core.link_down(now)
        hellos = [a.msg for a in core.link_up(now) if isinstance(a, Send)
                  and isinstance(a.msg, M.Hello)]
        assert hellos == [M.Hello("web1", "9.9", "b00t", FULL)]
