"""QUERY on the node and the JOB's ``query`` field: what a node answers, how the answers
are bounded at the protocol edge, and that they reach a RUN as data (real /bin/sh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from director.errors import ProtocolError
from director.jobs.dsl import parse_line
from director.jobs.executor import execute
from director.jobs.nodestate import JobCache, NodeState
from director.protocol import messages as m
from director.protocol.answers import MAX_ANSWER, MAX_ENTRIES


@pytest.fixture
def node(tmp_path: Path):
    state = NodeState(tmp_path)
    cache = JobCache(tmp_path / "jobcache.db")
    yield state, cache
    cache.close()


def run(node, line: str, query: dict | None = None):
    state, cache = node
    return execute(parse_line(line), state, cache,
                   scope={"query": query} if query is not None else None)


def test_query_answers_the_value_as_json_and_nothing_when_unset(node):
    assert run(node, "ARG a=1 2").status == "success"
    out = run(node, "QUERY a")
    assert (out.status, out.stdout) == ("success", '"1 2"\n')
    unset = run(node, "QUERY missing")
    assert (unset.status, unset.stdout, unset.cached) == ("success", "", False)


def test_query_answers_a_nodes_own_value_over_the_operators(node, tmp_path):
    state, _ = node
    (tmp_path / "c.yaml").write_text("n: 5\nm: {k: [1, true]}\n")
    run(node, "ARG n=op")
    assert run(node, f"CACHEFILE {tmp_path}/c.yaml").status == "success"
    assert run(node, "QUERY n").stdout == "5\n"
    assert json.loads(run(node, "QUERY m").stdout) == {"k": [1, True]}
    assert run(node, "RUN --stdout-arg n echo from-run").status == "success"
    assert run(node, "QUERY n").stdout == '"from-run"\n'


def test_query_is_never_answered_from_the_cache(node):
    run(node, "ARG a=1")
    assert run(node, "QUERY a").stdout == '"1"\n'
    run(node, "ARG a=2")
    assert run(node, "QUERY a").stdout == '"2"\n'


def test_a_value_over_the_bound_fails_the_query_on_that_node(node):
    run(node, f"ARG big={'x' * MAX_ANSWER}")
    out = run(node, "QUERY big")
    assert out.status == "failed" and "larger than 65536 bytes" in out.error


@pytest.mark.parametrize("line", ["QUERY", "QUERY a b", "QUERY 1a", "QUERY a-b"])
def test_query_takes_one_name(line):
    from director.errors import DSLError

    with pytest.raises(DSLError):
        parse_line(line)


NESTED: list = []
for _ in range(70):
    NESTED = [NESTED]
HOSTILE = ["$(touch {mark})", "`touch {mark}`", "; touch {mark}", "{{ 7*7 }}",
           "{% raw %}x", "'\"; touch {mark}; \"'", "a\nb"]


@pytest.mark.parametrize("value", HOSTILE)
def test_an_answer_reaches_a_run_as_data_never_code_or_a_template(node, tmp_path, value):
    mark = tmp_path / "pwned"
    value = value.replace("{mark}", str(mark))
    job = decoded_job("RUN printf '%s|' {{ query.n1.a }} \"{{ query.n2.a }}\" "
                      "{{ query.values() | map(attribute='a') | select('defined') | list | first }}",
                      {"n1": {"a": value}, "n2": {"a": value}, "n3": {}})
    state, cache = node
    out = execute(job.instruction, state, cache, scope={"query": job.query})
    assert out.status == "success", out.error
    assert out.stdout == f"{value}|{value}|{value}|"
    assert not mark.exists()


def decoded_job(line: str, query: dict) -> m.Job:
    """A JOB as the node gets it: encoded by the server's rules, decoded at the edge."""
    body = m.job_body("0123abcd0002", json.dumps(parse_line(line).to_dict()),
                      "0123abcd.0", 2)
    spliced = body[:-1] + b',"query":' + json.dumps(query).encode() + b"}"
    return m.decode([b"D1", b"JOB", spliced])


@pytest.mark.parametrize("query, rule", [
    ([], "must be an object"),
    ({"n1": []}, "must be an object of NAME: value"),
    ({"n1": {"1a": 1}}, "is not a NAME"),
    ({"": {"a": 1}}, "node name"),
    ({"n\x1b[31m": {"a": 1}}, "node name"),
    ({f"n{i}": {"a": 1} for i in range(MAX_ENTRIES + 1)}, "more than"),
    ({"n1": {"a": NESTED}}, "nested"),
])
def test_the_query_field_is_bounded_at_the_edge_and_the_job_still_answerable(query, rule):
    with pytest.raises(ProtocolError) as exc:
        decoded_job("RUN true", query)
    assert rule in str(exc.value)
    assert exc.value.job_id == "0123abcd0002"


def test_a_job_without_answers_has_none():
    job = m.decode([b"D1", b"JOB", m.job_body("0123abcd0002", json.dumps(
        parse_line("RUN true").to_dict()), "0123abcd.0", 2)])
    assert job.query is None
    again = m.decode(m.encode(m.Job(job.job_id, job.instruction, job.lane, 2,
                                    query={"n1": {"a": [1, "x"]}})))
    assert again.query == {"n1": {"a": [1, "x"]}}
