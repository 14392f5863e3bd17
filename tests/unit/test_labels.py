"""Operator labels (director/labels.py): keys, values, counts; one clear error each."""

from __future__ import annotations

import pytest

from director import labels as L
from director.errors import DirectorError


def test_assignments_parse():
    assert L.parse_assignments(["role=web", "tier=front-1", "empty="]) == {
        "role": "web", "tier": "front-1", "empty": ""}
    assert L.parse_assignments(["url=http://x.example:80/a@b+c"]) == {
        "url": "http://x.example:80/a@b+c"}


@pytest.mark.parametrize(("words", "message"), [
    (["role"], "expected KEY=VALUE"),
    (["=web"], "bad label key"),
    (["ro le=web"], "bad label key"),
    (["k" * 64 + "=v"], "bad label key"),
    (["rôle=web"], "bad label key"),
    (["role=web,db"], "bad value"),
    (["role=web*"], "bad value"),
    (["role=a b"], "bad value"),
    (["role=\x1b[2J"], "bad value"),
    (["role=" + "v" * 129], "bad value"),
    (["role=a", "role=b"], "given twice"),
])
def test_bad_assignments_are_refused(words, message):
    with pytest.raises(DirectorError, match=message):
        L.parse_assignments(words)


def test_change_sets_and_removes():
    assert L.change({"a": "1", "b": "2"}, {"c": "3"}, ["a", "zz"]) == {"b": "2", "c": "3"}
    assert L.change({"a": "1"}, {"a": "2"}, []) == {"a": "2"}
    assert L.change({"a": "1"}, {}, ["a"]) == {}


@pytest.mark.parametrize(("set_", "remove", "message"), [
    ({}, [], "nothing to change"),
    ({"a": "1"}, ["a"], "both set and removed"),
    ({"a b": "1"}, [], "bad label key"),
    ({"a": 1}, [], "bad value"),
    ({}, ["bad key"], "bad label key"),
    ({}, [3], "bad label key"),
    ([], [], "malformed"),
    ({}, "a", "malformed"),
    ({f"k{i}": "v" for i in range(L.MAX_LABELS + 1)}, [], "too many labels"),
])
def test_bad_changes_are_refused(set_, remove, message):
    with pytest.raises(DirectorError, match=message):
        L.change({}, set_, remove)


def test_a_node_holds_a_bounded_number_of_labels():
    full = {f"k{i}": "v" for i in range(L.MAX_LABELS)}
    assert L.change(full, {"k0": "w"}, []) == {**full, "k0": "w"}
    with pytest.raises(DirectorError, match=f"at most {L.MAX_LABELS} labels"):
        L.change(full, {"one-more": "v"}, [])
