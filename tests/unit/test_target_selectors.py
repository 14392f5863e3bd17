"""``--target label:KEY=GLOB`` and ``fact:KEY=GLOB`` (jobs/targets.py): labels and facts
are data passed in, compared as strings; a selector matching nothing is an error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from director.errors import DirectorError
from director.jobs.targets import match_targets, match_values

ACCEPTED = ["web1", "web2", "db1", "old1"]
ATTRS = {
    "web1": {"labels": {"role": "web", "tier": "front"},
             "facts": {"hostname": "web1.example", "os": {"id": "debian", "version": "12"},
                       "arch": "x86_64", "cpus": 8, "addresses": ["10.0.0.1", "fe80::1"]}},
    "web2": {"labels": {"role": "web"},
             "facts": {"os": {"id": "ubuntu", "version": "24.04"}, "arch": "aarch64",
                       "cpus": 2, "addresses": ["10.0.1.2"]}},
    "db1": {"labels": {"role": "db"},
            "facts": {"os": {"id": "debian", "version": "11"}, "arch": "x86_64",
                      "cpus": 16}},
    # old1: an agent older than facts, never labelled: absent from ATTRS
}


def pick(*patterns: str, online=ACCEPTED, **kw) -> list[str]:
    return match_targets(list(patterns), ACCEPTED, online, attrs=ATTRS, **kw)


def test_label_selectors():
    assert pick("label:role=web") == ["web1", "web2"]
    assert pick("label:role=d*") == ["db1"]
    assert pick("label:tier=front") == ["web1"]
    assert pick("label:role=*") == ["db1", "web1", "web2"]   # has the label at all


def test_fact_selectors_compare_strings():
    assert pick("fact:arch=x86_64") == ["db1", "web1"]
    assert pick("fact:os=debian*") == ["db1", "web1"]
    assert pick("fact:os=debian") == ["db1", "web1"]        # the id alone also matches
    assert pick("fact:os=debian 12") == ["web1"]
    assert pick("fact:os.version=24.*") == ["web2"]
    assert pick("fact:os.id=ubuntu") == ["web2"]
    assert pick("fact:cpus=16") == ["db1"]
    assert pick("fact:addresses=10.0.1.*") == ["web2"]      # any of a node's addresses
    assert pick("fact:hostname=*.example") == ["web1"]


def test_selectors_mix_with_names_and_globs():
    assert pick("label:role=db", "web2") == ["db1", "web2"]
    assert pick("fact:arch=aarch64", "label:tier=front", "old*") == ["old1", "web1", "web2"]


@pytest.mark.parametrize("pattern", ["label:role=nothing", "fact:arch=sparc",
                                     "fact:nosuch=*", "label:nosuch=*", "fact:os.nope=x"])
def test_a_selector_matching_no_node_is_refused_like_an_unknown_name(pattern):
    with pytest.raises(DirectorError, match=r"unknown target '.*': no accepted node matches"):
        pick(pattern)


@pytest.mark.parametrize("pattern", ["label:role", "fact:", "label:=web", "fact:arch"])
def test_a_malformed_selector_says_how_to_write_it(pattern):
    with pytest.raises(DirectorError, match=r"bad target .*KEY=VALUE"):
        pick(pattern)


def test_a_selected_node_not_online_is_refused_unless_allowed():
    with pytest.raises(DirectorError, match="not online: web2"):
        pick("label:role=web", online=["web1"])
    assert pick("label:role=web", online=["web1"], allow_offline=True) == ["web1", "web2"]


def test_without_attrs_a_selector_matches_nothing_and_names_still_work():
    with pytest.raises(DirectorError, match="unknown target"):
        match_targets(["label:role=web"], ACCEPTED, ACCEPTED)
    assert match_targets(["web1"], ACCEPTED, ACCEPTED) == ["web1"]


def test_a_node_named_like_a_selector_is_still_reachable_by_glob():
    # names cannot hold ':' (trust/names), so the prefixes never shadow a node
    assert pick("web?") == ["web1", "web2"]


def test_fact_values_are_never_interpreted():
    attrs = {"web1": {"facts": {"hostname": "{{ 7*7 }}", "os": {"id": "$(id)"}},
                      "labels": {}}}
    assert match_targets(["fact:hostname={{ 7*7 }}"], ["web1"], ["web1"], attrs=attrs) == \
        ["web1"]
    with pytest.raises(DirectorError):
        match_targets(["fact:hostname=49"], ["web1"], ["web1"], attrs=attrs)
    assert match_values(attrs["web1"]["facts"], "os") == ["$(id)"]


JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=5), i,
                                                                        max_size=3),
                    max_leaves=10)


@given(JUNK, st.text(max_size=10))
def test_match_values_takes_any_document_and_gives_strings(doc, key):
    values = match_values(doc if isinstance(doc, dict) else {"k": doc}, key)
    assert all(isinstance(v, str) for v in values)
