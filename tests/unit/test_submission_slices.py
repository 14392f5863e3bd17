"""How a big submission's tasks are laid out as they are made (submission.slices):
every task once, each node's in job order, and a node's rows for a run of jobs side by
side (so its two writes per result touch a page or two, not one per job)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from director.server.submission import ROW_RUN, Submission, slices


def _sub(targets: list[list[str]]) -> Submission:
    nodes = sorted({n for t in targets for n in t})
    sub = Submission("orch0001", keys={n: f"key-{n}" for n in nodes}, now=1.0)
    for seq, names in enumerate(targets, 1):
        sub.fanout.append((f"job{seq:04x}", "orch0001.0", seq, 60.0, names))
        sub.ntasks += len(names)
    return sub


def _made(sub: Submission, size: int) -> list[tuple]:
    out = []
    for rows, tasks in slices(sub, size):
        assert len(rows) == len(tasks) and len(tasks) < size + ROW_RUN
        for row, task in zip(rows, tasks):
            assert (row[0], row[1], row[3]) == (task.job_id, task.node, "queued")
            out.append((task.job_id, task.node, task.seq))
    return out


def test_jobs_with_the_same_targets_are_laid_out_node_by_node():
    nodes = ["a", "b", "c"]
    made = _made(_sub([list(nodes) for _ in range(3)]), 1000)
    assert [(j[-1], n) for j, n, _ in made] == [
        ("1", "key-a"), ("2", "key-a"), ("3", "key-a"),
        ("1", "key-b"), ("2", "key-b"), ("3", "key-b"),
        ("1", "key-c"), ("2", "key-c"), ("3", "key-c")]


def test_a_run_is_at_most_row_run_jobs_and_other_targets_start_a_new_one():
    jobs = [["a", "b"]] * (ROW_RUN + 2) + [["b"], ["a", "b"]]
    made = _made(_sub(jobs), 10_000)
    first = made[:2 * ROW_RUN]
    assert [n for _, n, _ in first] == ["key-a"] * ROW_RUN + ["key-b"] * ROW_RUN
    assert [s for _, _, s in made[2 * ROW_RUN:2 * ROW_RUN + 4]] == [ROW_RUN + 1, ROW_RUN + 2] * 2
    assert made[-3:] == [(f"job{ROW_RUN + 3:04x}", "key-b", ROW_RUN + 3),
                         (f"job{ROW_RUN + 4:04x}", "key-a", ROW_RUN + 4),
                         (f"job{ROW_RUN + 4:04x}", "key-b", ROW_RUN + 4)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdef"), min_size=0, max_size=6, unique=True),
                min_size=1, max_size=40),
       st.integers(min_value=1, max_value=50))
def test_every_task_once_and_each_node_in_job_order(targets, size):
    made = _made(_sub(targets), size)
    expected = {(f"job{s:04x}", f"key-{n}") for s, names in enumerate(targets, 1)
                for n in names}
    assert len(made) == len(expected) and {(j, n) for j, n, _ in made} == expected
    for node in {n for _, n, _ in made}:
        seqs = [s for _, n, s in made if n == node]
        assert seqs == sorted(seqs)
