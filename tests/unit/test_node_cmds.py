"""``director nodes`` / ``nodes label`` / ``node NAME`` (cli/node_cmds.py): what a node
said of itself reaches the terminal without escape sequences; bad label input is one
line on stderr and nothing is sent."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from director import api
from director.cli import main as main_mod
from director.cli.main import cli

FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
EVIL = "x\x1b]0;owned title\x07\x1b[2J\u202e\r"
NODE = {"name": "web1", "state": "online", "last_seen": None, "address": "10.0.0.1" + EVIL,
        "version": "0.1" + EVIL, "fingerprint": "SHA256:f", "labels": {"role": "web"},
        "facts": {"hostname": "h" + EVIL, "os": {"id": "deb" + EVIL, "version": "12"},
                  "kernel": "k" + EVIL, "arch": "x86_64", "cpus": 4, "memory": 3 * 2**30,
                  "addresses": ["10.0.0.1", EVIL], "version": "0.1" + EVIL}}


@pytest.fixture
def asked(monkeypatch):
    """Canned (hostile) answers in place of the control socket; records the requests."""
    calls: list[tuple[str, dict]] = []
    answers = {"nodes": [{k: v for k, v in NODE.items() if k != "facts"}],
               "node.get": NODE,
               "nodes.label": {"name": "web1", "labels": {"role": "web", "tier": "a"}}}

    def request(self, op, args=None, timeout=None):
        calls.append((op, args))
        return answers[op]
    monkeypatch.setattr(api.Client, "request", request)
    return calls


@pytest.mark.parametrize("argv", [["nodes"], ["node", "web1"]])
def test_node_text_on_a_terminal_is_stripped(asked, argv):
    res = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert not FORBIDDEN.search(res.output)
    assert "owned title" not in res.output


def test_node_shows_facts_and_labels(asked):
    out = CliRunner().invoke(cli, ["node", "web1"], catch_exceptions=False).output
    assert asked == [("node.get", {"name": "web1"})]
    for expected in ("role=web", "x86_64", "3.0 GiB", "deb", "12", "10.0.0.1"):
        assert expected in out, out
    listing = CliRunner().invoke(cli, ["nodes"], catch_exceptions=False).output
    assert "LABELS" in listing and "role=web" in listing


def test_node_json_is_the_raw_document(asked):
    res = CliRunner().invoke(cli, ["node", "web1", "--json"], catch_exceptions=False)
    assert json.loads(res.output) == NODE and "\x1b" not in res.output


def test_label_sends_the_change_and_prints_the_result(asked):
    res = CliRunner().invoke(cli, ["nodes", "label", "web1", "tier=a", "--remove", "old"],
                             catch_exceptions=False)
    assert res.exit_code == 0 and res.output == "web1: role=web,tier=a\n"
    assert asked == [("nodes.label", {"name": "web1", "set": {"tier": "a"},
                                      "remove": ["old"]})]


@pytest.mark.parametrize("argv", [
    ["nodes", "label", "web1", "role"],
    ["nodes", "label", "web1", "ro le=web"],
    ["nodes", "label", "web1", "role=web,db"],
    ["nodes", "label", "web1", "role=\x1b[2J"],
    ["nodes", "label", "web1", "a=1", "--remove", "a"],
    ["nodes", "label", "web1"],
])
def test_bad_label_input_is_one_line_and_nothing_is_sent(asked, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main_mod.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code != 0
    assert err.startswith("director: ") and err.count("\n") == 1 and "\x1b" not in err
    assert asked == []


def test_the_api_node_document_has_its_labels():
    assert api.Node({"name": "w", "state": "online", "labels": {"role": "web"}}).labels == \
        {"role": "web"}
    assert api.Node({"name": "w", "state": "online"}).labels == {}  # an older server
