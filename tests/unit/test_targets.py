"""Tests for director.jobs.targets.match_targets: names, globs, defaults, unknown targets."""

from __future__ import annotations

import pytest

from director.errors import DirectorError
from director.jobs.targets import match_targets

ACCEPTED = ["web1", "web2", "db1", "Web3"]


def test_exact_names():
    assert match_targets(["web1"], ACCEPTED, ["web1"]) == ["web1"]
    assert match_targets(["db1", "web2"], ACCEPTED, ACCEPTED) == ["db1", "web2"]


def test_glob_patterns():
    assert match_targets(["web*"], ACCEPTED, ACCEPTED) == ["web1", "web2"]
    assert match_targets(["*1"], ACCEPTED, ACCEPTED) == ["db1", "web1"]
    assert match_targets(["web[12]"], ACCEPTED, ACCEPTED) == ["web1", "web2"]
    assert match_targets(["?b1"], ACCEPTED, ACCEPTED) == ["db1"]
    assert match_targets(["*"], ACCEPTED, ACCEPTED) == sorted(ACCEPTED)


def test_globs_are_case_sensitive():
    assert match_targets(["Web*"], ACCEPTED, ACCEPTED) == ["Web3"]


def test_overlapping_patterns_give_each_node_once_sorted():
    assert match_targets(["web*", "web1", "*1"], ACCEPTED, ACCEPTED) == ["db1", "web1", "web2"]


def test_targets_not_online_are_refused_in_one_line_unless_allowed():
    with pytest.raises(DirectorError) as info:
        match_targets(["web*", "db1"], ACCEPTED, online=["web1"])
    msg = str(info.value)
    assert msg.startswith("not online: db1, web2;") and "--allow-offline" in msg
    assert "\n" not in msg
    # allowed: their jobs wait for them (and end lost after expiry)
    assert match_targets(["web2"], ACCEPTED, ["web1"], allow_offline=True) == ["web2"]


def test_a_long_list_of_offline_targets_is_shortened():
    many = [f"n{i:02d}" for i in range(25)]
    with pytest.raises(DirectorError, match=r"not online: n00, .*n09 \(\+15 more\)"):
        match_targets(["n*"], many, [])


@pytest.mark.parametrize("pattern", ["web9", "nope*", "WEB1", ""])
def test_unknown_target_is_an_error_naming_it(pattern):
    with pytest.raises(DirectorError) as info:
        match_targets([pattern], ACCEPTED, ACCEPTED)
    msg = str(info.value)
    assert f"'{pattern}'" in msg and "unknown target" in msg
    assert "\n" not in msg


def test_one_unknown_pattern_fails_the_whole_selection():
    with pytest.raises(DirectorError, match="web9"):
        match_targets(["web1", "web9"], ACCEPTED, ACCEPTED)


def test_only_accepted_nodes_match():
    # A node that is online but not accepted (pending, revoked) is never a target.
    with pytest.raises(DirectorError):
        match_targets(["pending1"], ACCEPTED, ["pending1"])


def test_default_is_online_and_accepted():
    assert match_targets([], ACCEPTED, ["web2", "db1"]) == ["db1", "web2"]
    assert match_targets([], ACCEPTED, ["web2", "stranger"]) == ["web2"]


def test_default_with_nothing_online_is_an_error():
    with pytest.raises(DirectorError, match="no online nodes"):
        match_targets([], ACCEPTED, [])
    with pytest.raises(DirectorError, match="no online nodes"):
        match_targets([], [], ["stranger"])


def test_accepts_any_iterables():
    assert match_targets(("web1",), iter(ACCEPTED), iter(["web1"])) == ["web1"]
    assert match_targets((), {"a": 1, "b": 2}, iter(["b"])) == ["b"]
