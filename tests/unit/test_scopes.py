"""ARG/ENV/WORKDIR per submission (jobs/scopes.py): fresh for each, kept for its later
lines and across an agent restart, bounded."""

from __future__ import annotations

from director.jobs.scopes import Scopes, state_for


def test_each_submission_starts_from_the_defaults_and_keeps_its_own_values(tmp_path):
    s = Scopes(tmp_path)
    a = s.scope("aaaaaaaa.0")
    a.update(arg=("X", "1"), env=("E", "2"), workdir=str(tmp_path / "wd"))
    assert s.scope("aaaaaaaa.3") is a           # an async item of the same submission
    assert a.snapshot() == ({"X": "1"}, {"E": "2"}, str(tmp_path / "wd"))
    b = s.scope("bbbbbbbb.0")
    assert b.snapshot() == ({}, {}, str(tmp_path / "work"))
    again = Scopes(tmp_path).scope("aaaaaaaa.0")  # an agent restart mid-orchestration
    assert again.snapshot() == a.snapshot()


def test_scopes_are_bounded_in_memory_and_on_disk(tmp_path):
    s = Scopes(tmp_path, keep=4)
    for i in range(70):
        s.scope(f"{i:08x}.0").update(arg=("N", str(i)))
    assert len(s.live) == 4
    assert len(list((tmp_path / "scopes").glob("*.json"))) <= 4 + 64
    Scopes(tmp_path, keep=4)                      # a restart prunes what is left
    assert len(list((tmp_path / "scopes").glob("*.json"))) == 4


def test_one_node_state_is_used_as_it_is(tmp_path):
    from director.jobs.nodestate import NodeState

    one = NodeState(tmp_path)
    assert state_for(one, "aaaaaaaa.0") is one
