"""Jobs end to end: exec, orchestrate, jobs, job, with a real server and real clients.

Most tests share one mesh (server + web1, web2, db1) for speed; each uses unique
commands and marker files so the node caches never make one test depend on another
(ARG/ENV/WORKDIR live for one submission only).  Tests that kill or restart processes get their own mesh.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from conftest import shared_mesh
from procs import gone

from director.protocol.timing import RECONNECT_GRACE

NODES = ("web1", "web2", "db1")
DOC_FIELDS = {"id", "verb", "status", "results"}
RESULT_FIELDS = {"status", "rc", "stdout", "stderr", "cached", "exec_time", "roundtrip_time",
                 "transfer"}
FINAL = {"success", "failed", "timeout", "lost", "cancelled"}


@pytest.fixture(scope="module")
def grid():
    """One server and three clients, shared by the tests of this module that only submit."""
    yield from shared_mesh(NODES)


def uid() -> str:
    return uuid.uuid4().hex[:10]


def run(m, *args: str, timeout: float = 30):
    """``director ARGS --json``: (completed process, parsed stdout or None)."""
    cp = m.cli(*args, "--json", timeout=timeout)
    try:
        doc = json.loads(cp.stdout) if cp.stdout.strip() else None
    except ValueError as exc:
        raise AssertionError(f"non-JSON stdout from {args}: {cp.stdout!r} / {cp.stderr!r}") from exc
    return cp, doc


def exec_wait(m, line: str, *targets: str, expect_rc: int = 0) -> dict:
    """``exec --wait --json`` one line; the single job document."""
    opts = [a for t in targets for a in ("--target", t)]
    cp, docs = run(m, "exec", "--wait", *opts, line)
    assert cp.returncode == expect_rc, (cp.returncode, cp.stdout, cp.stderr)
    assert isinstance(docs, list) and len(docs) == 1, docs
    return docs[0]


def orchestrate(m, *paths: Path | str, expect_rc: int = 0) -> list[dict]:
    """``orchestrate --wait --json`` (options may be mixed in with the files)."""
    cp, docs = run(m, "orchestrate", "--wait", *map(str, paths))
    assert cp.returncode == expect_rc, (cp.returncode, cp.stdout, cp.stderr)
    assert isinstance(docs, list)
    return docs


def job_ids(m) -> list[str]:
    return [j["id"] for j in m.json("jobs", "-n", "10000")]


def assert_one_line_error(cp, *needles: str) -> None:
    assert cp.returncode not in (0, None), (cp.returncode, cp.stdout, cp.stderr)
    err = cp.stderr.strip()
    assert err, "no error message on stderr"
    assert "\n" not in err, f"error is not one line: {cp.stderr!r}"
    assert "Traceback" not in cp.stderr
    for needle in needles:
        assert needle in err, (needle, err)


def check_doc(doc: dict) -> None:
    assert DOC_FIELDS <= set(doc), doc
    assert isinstance(doc["id"], str) and doc["id"]
    for name, r in doc["results"].items():
        assert RESULT_FIELDS <= set(r), (name, r)
        assert r["status"] in FINAL | {"queued", "running"}
        assert isinstance(r["cached"], bool)


# -- exec ---------------------------------------------------------------------------------
def test_exec_wait_json_contract(grid):
    tag = uid()
    doc = exec_wait(grid, f"RUN echo out-{tag}; echo err-{tag} >&2")
    check_doc(doc)
    assert doc["verb"] == "RUN" and doc["status"] == "success"
    assert set(doc["results"]) == set(NODES)  # default: every online node
    for r in doc["results"].values():
        assert r["status"] == "success" and r["rc"] == 0
        assert r["stdout"] == f"out-{tag}\n" and r["stderr"] == f"err-{tag}\n"
        assert r["cached"] is False and r["transfer"] is None
        assert isinstance(r["exec_time"], float) and r["exec_time"] >= 0
        assert isinstance(r["roundtrip_time"], float) and r["roundtrip_time"] >= 0
    # The same document from `job ID --json`.
    again = grid.json("job", doc["id"])
    assert again["id"] == doc["id"] and again["status"] == "success"
    assert again["results"]["web1"]["stdout"] == f"out-{tag}\n"


def test_exec_wait_text_output(grid):
    tag = uid()
    cp = grid.cli("exec", "--wait", "--target", "web1", f"RUN echo text-{tag}")
    assert cp.returncode == 0, cp.stderr
    assert "web1" in cp.stdout and "success" in cp.stdout and f"text-{tag}" in cp.stdout


def test_failing_command_exits_2(grid):
    tag = uid()
    doc = exec_wait(grid, f"RUN echo partial-{tag}; echo bad >&2; exit 3", expect_rc=2)
    assert doc["status"] == "failed"
    for r in doc["results"].values():
        assert r["status"] == "failed" and r["rc"] == 3
        assert r["stdout"] == f"partial-{tag}\n" and r["stderr"] == "bad\n"
    cp = grid.cli("exec", "--wait", "--target", "db1", f"RUN false # {tag}")
    assert cp.returncode == 2


def test_target_by_name_and_glob(grid):
    tag = uid()
    assert set(exec_wait(grid, f"RUN echo {tag}", "web1")["results"]) == {"web1"}
    assert set(exec_wait(grid, f"RUN echo {tag}-g", "web*")["results"]) == {"web1", "web2"}
    both = exec_wait(grid, f"RUN echo {tag}-2", "db1", "web2")
    assert set(both["results"]) == {"db1", "web2"}
    assert set(exec_wait(grid, f"RUN echo {tag}-q", "?b1")["results"]) == {"db1"}


@pytest.mark.parametrize("targets", [["nope"], ["web1", "nope*"]])
def test_unknown_target_is_refused_and_nothing_created(grid, targets):
    before = job_ids(grid)
    opts = [a for t in targets for a in ("--target", t)]
    cp = grid.cli("exec", "--wait", *opts, f"RUN echo {uid()}")
    assert_one_line_error(cp, targets[-1])
    cp = grid.cli("exec", *opts, f"RUN echo {uid()}")  # without --wait too
    assert_one_line_error(cp, targets[-1])
    assert job_ids(grid) == before


def test_unknown_target_in_yaml_is_refused(grid):
    before = job_ids(grid)
    f = grid.root / f"t-{uid()}.yaml"
    f.write_text("- targets: [web1]\n  jobs: [RUN: echo a]\n"
                 "- targets: [ghost]\n  jobs: [RUN: echo b]\n")
    assert_one_line_error(grid.cli("orchestrate", "--wait", str(f)), "ghost")
    assert job_ids(grid) == before


def test_exec_without_wait_prints_id_and_returns(grid):
    tag = uid()
    cp = grid.cli("exec", "--target", "web2", f"RUN sleep 1.5; echo late-{tag}")
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.strip()
    assert job_id and "\n" not in job_id
    # It returned while the job was still running on the node.
    assert grid.json("job", job_id)["status"] in ("queued", "running")

    def done():
        doc = grid.json("job", job_id)
        return doc if doc["status"] in FINAL else None

    doc = grid.wait_for(done, timeout=15, what="the job to finish", interval=0.2)
    check_doc(doc)
    assert doc["status"] == "success"
    assert doc["results"]["web2"]["stdout"] == f"late-{tag}\n"


def test_exec_without_wait_json(grid):
    cp, doc = run(grid, "exec", "--target", "db1", f"RUN echo {uid()}")
    assert cp.returncode == 0 and doc["jobs"]
    grid.wait_for(lambda: grid.json("job", doc["jobs"][0])["status"] == "success", timeout=10,
                  what="job success")


def test_job_last_and_jobs_listing(grid):
    tag = uid()
    doc = exec_wait(grid, f"RUN echo last-{tag}", "web1")
    last = grid.json("job", "last")
    assert last["id"] == doc["id"]
    assert last["results"]["web1"]["stdout"] == f"last-{tag}\n"
    cp = grid.cli("job", "last")
    assert cp.returncode == 0 and doc["id"] in cp.stdout and f"last-{tag}" in cp.stdout
    rows = grid.json("jobs")
    assert rows[0]["id"] == doc["id"]  # newest first
    for key in ("id", "verb", "targets", "status", "counts", "age"):
        assert key in rows[0], key
    assert rows[0]["targets"] == ["web1"] and rows[0]["counts"] == {"success": 1}
    text = grid.cli("jobs")
    assert text.returncode == 0 and doc["id"] in text.stdout


def test_job_unknown_id_is_one_line_error(grid):
    assert_one_line_error(grid.cli("job", "ffffffffffff"), "ffffffffffff")
    assert_one_line_error(grid.cli("job", "zzzz", "--json"))


def test_single_node_round_trip_works(grid):
    # The latency path: one node, RUN true. Not a timing assertion.
    doc = exec_wait(grid, "RUN --skip-cache true", "web1")
    assert doc["results"]["web1"]["status"] == "success"


# -- orchestrate --------------------------------------------------------------------------
def test_orchestrate_directorfile(grid):
    tag = uid()
    f = grid.root / f"Directorfile-{tag}"
    f.write_text(
        "# a comment line\n"
        "\n"
        f"ARG WHO=world-{tag}\n"
        "   # an indented comment\n"
        f"ENV GREETING_{tag}=hello\n"
        f"WORKDIR wd-{tag}\n"
        f"RUN echo \"$GREETING_{tag} ${{WHO}} {{{{ WHO }}}}\" \\\n"
        "    && echo continued \\\n"
        "    && basename \"$(pwd)\"\n"
    )
    docs = orchestrate(grid, f)
    assert [d["verb"] for d in docs] == ["ARG", "ENV", "WORKDIR", "RUN"]
    assert len({d["id"] for d in docs}) == 4
    for d in docs:
        check_doc(d)
        assert d["status"] == "success" and set(d["results"]) == set(NODES)
    for r in docs[-1]["results"].values():
        assert r["stdout"] == f"hello world-{tag} world-{tag}\ncontinued\nwd-{tag}\n"


def test_wait_json_documents_equal_job_json(grid):
    """`orchestrate --wait --json` prints each job exactly as `job ID --json` does: the
    documents the server builds while results arrive match the stored ones field for
    field, for successes, a failure and the jobs it cancelled."""
    tag = uid()
    f = grid.root / f"Directorfile-eq-{tag}"
    f.write_text(f"RUN echo one-{tag}\nRUN --skip-cache echo two >&2; exit 3\n"
                 f"RUN echo never-{tag}\n")
    docs = orchestrate(grid, f, expect_rc=2)
    assert [d["status"] for d in docs] == ["success", "failed", "cancelled"]
    for doc in docs:
        assert grid.json("job", doc["id"]) == doc


def test_orchestrate_directord_yaml(grid):
    tag = uid()
    side = grid.root / f"side-{tag}"
    f = grid.root / f"orch-{tag}.yaml"
    f.write_text(
        f"""# directord-style
- name: greet
  targets:
    - web1
    - web2
  jobs:
    - ARG: WHO_{tag} world {tag}
    - RUN: --skip-cache echo "${{WHO_{tag}}}" >> {side}
    - RUN: echo "{{{{ WHO_{tag} }}}}"
- targets: ["db*"]
  async: true
  jobs:
    - RUN: echo async-{tag}
- jobs:
    - RUN: echo everyone-{tag}
""")
    docs = orchestrate(grid, f)
    assert len(docs) == 5
    arg, skip, echo, async_, everyone = docs
    assert all(d["status"] == "success" for d in docs)
    assert set(arg["results"]) == set(skip["results"]) == set(echo["results"]) == {"web1", "web2"}
    for r in echo["results"].values():
        assert r["stdout"] == f"world {tag}\n"
    assert set(async_["results"]) == {"db1"}
    assert async_["results"]["db1"]["stdout"] == f"async-{tag}\n"
    assert set(everyone["results"]) == set(NODES)
    assert side.read_text().splitlines() == [f"world {tag}"] * 2

    # Again: --skip-cache runs again, the plain RUN is answered from the cache.
    docs = orchestrate(grid, f)
    assert all(r["cached"] is False for r in docs[1]["results"].values())
    assert all(r["cached"] is True for r in docs[2]["results"].values())
    assert len(side.read_text().splitlines()) == 4


def test_orchestrate_several_files_in_order(grid):
    tag = uid()
    a = grid.root / f"a-{tag}"
    b = grid.root / f"b-{tag}.yml"
    a.write_text(f"ARG ORDER_{tag}=first\n")
    b.write_text(f"- jobs:\n  - RUN: echo ${{ORDER_{tag}}}\n")
    docs = orchestrate(grid, a, b, "--target", "web2")
    assert docs[-1]["results"] == {"web2": docs[-1]["results"]["web2"]}
    assert docs[-1]["results"]["web2"]["stdout"] == "first\n", json.dumps(docs, indent=1)


def test_failure_stops_later_jobs_on_that_node_only(grid):
    tag = uid()
    f = grid.root / f"fail-{tag}.yaml"
    f.write_text(
        f"""- targets: [web1]
  jobs:
    - RUN: echo failing-{tag}; exit 4
- jobs:
    - RUN: echo after-{tag}
    - RUN: echo later-{tag}
""")
    docs = orchestrate(grid, f, expect_rc=2)
    first, after, later = docs
    assert first["results"]["web1"]["status"] == "failed" and first["results"]["web1"]["rc"] == 4
    for doc in (after, later):
        assert doc["results"]["web1"]["status"] == "cancelled"
        assert doc["results"]["web2"]["status"] == "success"
        assert doc["results"]["db1"]["status"] == "success"
        assert doc["status"] == "cancelled"
    assert later["results"]["web2"]["stdout"] == f"later-{tag}\n"


def test_failure_stops_a_long_lane_beyond_the_window(grid):
    """A lane longer than the server's window: jobs sent after the failure must not run."""
    tag = uid()
    marker = grid.root / f"ran-{tag}"
    lines = [f"RUN echo first-{tag}", "WORKDIR /proc/no-such-dir-here/x"]
    lines += [f"RUN echo {i} >> {marker}" for i in range(80)]
    f = grid.root / f"long-{tag}"
    f.write_text("\n".join(lines) + "\n")
    docs = orchestrate(grid, f, "--target", "web1", expect_rc=2)
    assert docs[0]["results"]["web1"]["status"] == "success"
    assert docs[1]["results"]["web1"]["status"] == "failed"
    statuses = [d["results"]["web1"]["status"] for d in docs[2:]]
    assert statuses == ["cancelled"] * 80, [i for i, s in enumerate(statuses) if s != "cancelled"]
    assert not marker.exists(), f"jobs ran after a failure: {marker.read_text()!r}"


def test_no_job_runs_after_a_failure_with_parallel_lanes(grid):
    """Async lanes finishing with the failure free window slots, so the server sends more
    jobs of the failed lane before it hears of the failure: the node must cancel them."""
    tag = uid()
    for attempt in range(3):  # before the fix this showed in ~2 of 3 attempts
        marker = grid.root / f"race-{tag}-{attempt}"
        items = ["- async: true\n  jobs:\n  - RUN: --skip-cache sleep 0.3\n"] * 7
        lines = "".join(f"  - RUN: --skip-cache echo {i} >> {marker}\n" for i in range(100))
        items.append(f"- jobs:\n  - RUN: --skip-cache sleep 0.3; exit 1\n{lines}")
        f = grid.root / f"race-{tag}-{attempt}.yaml"
        f.write_text("".join(items))
        docs = orchestrate(grid, f, "--target", "web1", expect_rc=2)
        statuses = [d["results"]["web1"]["status"] for d in docs[8:]]
        ran = [i for i, st in enumerate(statuses) if st != "cancelled"]
        assert not marker.exists() and not ran, (
            f"attempt {attempt}: jobs {ran} of a failed lane ran: {statuses}")


def test_timeout_reports_timeout_and_exits_2(grid):
    tag = uid()
    start = time.monotonic()
    doc = exec_wait(grid, f"RUN --timeout 0.5 echo started-{tag}; sleep 30 & echo $!; sleep 30",
                    "web2", expect_rc=2)
    assert time.monotonic() - start < 25
    r = doc["results"]["web2"]
    assert doc["status"] == "timeout" and r["status"] == "timeout"
    first, pid = r["stdout"].split()
    assert first == f"started-{tag}"
    assert r["cached"] is False
    # The whole process group was killed, including the background sleep.
    grid.wait_for(lambda: gone(int(pid)), timeout=5, what=f"background pid {pid} to be gone")


def test_cache_hit_and_skip_cache(grid):
    tag = uid()
    side = grid.root / f"cache-{tag}"
    line = f"RUN echo ran >> {side}; echo result-{tag}"
    first = exec_wait(grid, line, "web1")["results"]["web1"]
    assert first["cached"] is False
    second = exec_wait(grid, line, "web1")["results"]["web1"]
    assert second["cached"] is True and second["status"] == "success"
    assert second["stdout"] == f"result-{tag}\n" and second["rc"] == 0
    assert side.read_text() == "ran\n"  # the second answer did not run anything
    third = exec_wait(grid, f"RUN --skip-cache echo ran >> {side}; echo result-{tag}",
                      "web1")["results"]["web1"]
    assert third["cached"] is False
    assert side.read_text() == "ran\nran\n"
    # The cache is per node: web2 has never run it.
    assert exec_wait(grid, line, "web2")["results"]["web2"]["cached"] is False


def test_run_once_runs_on_exactly_one_node(grid):
    tag = uid()
    side = grid.root / f"once-{tag}"
    doc = exec_wait(grid, f"RUN --run-once echo $PWD >> {side}")
    assert len(doc["results"]) == 1
    assert next(iter(doc["results"].values()))["status"] == "success"
    assert len(side.read_text().splitlines()) == 1
    doc = exec_wait(grid, f"RUN --run-once --skip-cache echo x-{tag}", "web*")
    assert len(doc["results"]) == 1 and set(doc["results"]) <= {"web1", "web2"}


def test_stdout_arg_feeds_later_jobs(grid):
    tag = uid()
    name = f"VAL_{tag}"
    f = grid.root / f"stdout-arg-{tag}"
    f.write_text(f"RUN --stdout-arg {name} --skip-cache echo '  v-{tag}  '\n"
                 f"RUN echo got-${{{name}}}-{{{{ {name} }}}}\n")
    docs = orchestrate(grid, f, "--target", "web2")
    assert docs[0]["results"]["web2"]["stdout"] == f"  v-{tag}  \n"
    assert docs[1]["results"]["web2"]["stdout"] == f"got-v-{tag}-v-{tag}\n"
    # It lives for that submission only, and another node never stored it: the shell
    # sees an unset variable.
    for node in ("web2", "db1"):
        doc = exec_wait(grid, f"RUN echo got-${{{name}}}", node)
        assert doc["results"][node]["stdout"] == "got-\n"


def test_env_shows_in_run_output(grid):
    tag = uid()
    f = grid.root / f"env-{tag}"
    f.write_text(f"ENV MY_VAR_{tag}=value-{tag}\nRUN echo \"env=$MY_VAR_{tag}\"\n")
    docs = orchestrate(grid, f, "--target", "db1")
    assert docs[-1]["results"]["db1"]["stdout"] == f"env=value-{tag}\n"
    # ENV (like ARG and WORKDIR) lives for the rest of its submission only: a later
    # exec starts from the node's defaults.
    doc = exec_wait(grid, f"RUN env | grep -c ^MY_VAR_{tag}= || true; pwd", "db1")
    work = doc["results"]["db1"]["stdout"].splitlines()
    assert work[0] == "0" and work[1].endswith("/work"), work


def test_copy_is_refused_cleanly_or_runs(grid):
    # COPY belongs to the transfer work; whatever state it is in, it never crashes the CLI.
    src = grid.root / f"src-{uid()}"
    src.write_text("x")
    cp = grid.cli("exec", "--wait", "--json", "--target", "web1", f"COPY {src} /tmp/{src.name}")
    assert cp.returncode in (0, 1, 2), cp.stderr
    assert "Traceback" not in cp.stderr


# -- bad input ----------------------------------------------------------------------------
BAD_FILES = {
    # name: (file name, content or None for missing, expected text in the message)
    "unknown verb in Directorfile": ("Directorfile", "RUN echo ok\n# c\nFROB x\n", ":3:"),
    "bad option in Directorfile": ("Directorfile", "RUN echo a\nRUN --bogus echo b\n", ":2:"),
    "bad timeout": ("Directorfile", "RUN --timeout -1 echo a\n", ":1:"),
    "bad yaml": ("o.yaml", "- jobs:\n  - RUN: echo a\n   bad: [\n", ".yaml:"),
    "yaml unknown verb": ("o.yaml", "- jobs:\n  - RUN: echo a\n  - FROB: x\n", ".yaml:3:"),
    "yaml bad key": ("o.yaml", "- jobs: [RUN: echo a]\n  tragets: [web1]\n", ".yaml:2:"),
    "yaml not a list": ("o.yaml", "jobs: [RUN: echo a]\n", ".yaml"),
    "empty Directorfile": ("Directorfile", "# only a comment\n\n", "no jobs"),
    "empty yaml": ("o.yaml", "", "no jobs"),
    "missing file": ("missing", None, "missing"),
}


def test_bad_orchestration_files(grid):
    # One test for every case, so `jobs --json` is compared once (CLI calls cost time).
    before = job_ids(grid)
    for case, (name, content, needle) in BAD_FILES.items():
        d = grid.root / f"bad-{uid()}"
        d.mkdir()
        path = d / name
        if content is not None:
            path.write_text(content)
        cp = grid.cli("orchestrate", "--wait", str(path))
        try:
            assert_one_line_error(cp, needle)
            assert str(path) in cp.stderr
        except AssertionError as exc:
            raise AssertionError(f"case {case!r}: {exc}") from None
    assert job_ids(grid) == before


BAD_LINES = [
    ("FROB x", "unknown verb"),
    ("RUN --bogus echo", "--bogus"),
    ("RUN", "RUN needs a command"),
    ("RUN --timeout abc echo", "--timeout"),
    ("ARG 1BAD=x", "invalid name"),
    ("COPY --chmod 999 a b", "--chmod"),
    ("RUN --stdout-arg echo", "RUN needs a command"),
]


def test_bad_exec_lines(grid):
    before = job_ids(grid)
    for line, needle in BAD_LINES:
        cp = grid.cli("exec", "--wait", "--json", line)
        try:
            assert_one_line_error(cp, needle)
        except AssertionError as exc:
            raise AssertionError(f"line {line!r}: {exc}") from None
    assert job_ids(grid) == before


# -- nodes that go away, servers that restart ---------------------------------------------
def _kill_group_from(pidfile: Path) -> None:
    try:
        pgid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_node_killed_mid_job_ends_lost(mesh):
    mesh.server(node_expiry=3, heartbeat_interval=0.5)
    mesh.add_node("a")
    mesh.add_node("b")
    pidfile = mesh.root / "job.pid"
    f = mesh.root / "Directorfile"
    f.write_text(f"RUN echo $$ > {pidfile}; sleep 30\nRUN echo next\nRUN echo after\n")
    waiter = mesh.spawn("orchestrate", "--wait", "--json", "--target", "a", str(f),
                        name="orchestrate-wait", capture_stdout=True)
    try:
        mesh.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10,
                      what="the job to start on node a")
        mesh.clients["a"].signal(signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            rc = waiter.wait(timeout=3 + 6)  # node_expiry + a few seconds
        except Exception:  # noqa: BLE001 - reported just below
            rc = None
        took = time.monotonic() - killed_at
        assert rc == 2, f"--wait exited {rc} after {took:.1f}s: {waiter.log()[-2000:]}"
        docs = json.loads(waiter.stdout())
        assert [d["results"]["a"]["status"] for d in docs] == ["lost"] * 3
        assert all(d["status"] == "lost" for d in docs)
        assert mesh.json("job", docs[0]["id"])["results"]["a"]["status"] == "lost"
    finally:
        _kill_group_from(pidfile)  # the orphaned `sleep 30` of the killed client
    # The other node is unaffected.
    doc = exec_wait(mesh, "RUN echo still-here", "b")
    assert doc["results"]["b"]["stdout"] == "still-here\n"


def test_client_restarted_mid_job_ends_lost(mesh):
    mesh.server(node_expiry=3, heartbeat_interval=0.5)
    mesh.add_node("a")
    pidfile = mesh.root / "job.pid"
    cp = mesh.cli("exec", "--target", "a", f"RUN echo $$ > {pidfile}; sleep 30")
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.strip()
    try:
        mesh.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10,
                      what="the job to start")
        # The agent crashes and is back well within node_expiry: what it ran is gone.
        mesh.clients["a"].signal(signal.SIGKILL)
        mesh.clients["a"].wait(timeout=5)
        _kill_group_from(pidfile)
        mesh.wait_online("a", proc=mesh.client("a"))

        def final():
            d = mesh.json("job", job_id)
            return d if d["status"] in FINAL else None

        doc = mesh.wait_for(final, timeout=3 + 6, what="the job to end", interval=0.25)
        assert doc["results"]["a"]["status"] == "lost"
    finally:
        _kill_group_from(pidfile)
    assert exec_wait(mesh, "RUN echo back", "a")["results"]["a"]["stdout"] == "back\n"


def test_client_stops_promptly_on_sigterm_while_a_job_runs(mesh):
    mesh.server()
    mesh.add_node("a")
    pidfile = mesh.root / "job.pid"
    cp = mesh.cli("exec", "--target", "a", f"RUN echo $$ > {pidfile}; sleep 30")
    assert cp.returncode == 0, cp.stderr
    client = mesh.clients["a"]
    try:
        mesh.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10,
                      what="the job to start")
        client.signal(signal.SIGTERM)
        try:
            client.wait(timeout=3)
        except Exception:  # noqa: BLE001 - still running: asserted below
            pass
        assert not client.alive(), "the client is still running 3 s after SIGTERM"
        # ... and it leaves no job processes behind.
        pgid = int(pidfile.read_text())
        mesh.wait_for(lambda: gone(pgid), timeout=3, what=f"job process {pgid} to be gone")
    finally:
        _kill_group_from(pidfile)
        if client.alive():
            client.signal(signal.SIGKILL)
            client.wait(timeout=5)


def test_server_restart_keeps_history_and_results(mesh):
    mesh.server(node_expiry=3, heartbeat_interval=0.5)
    mesh.add_node("a")
    mesh.add_node("gone")
    done = exec_wait(mesh, "RUN echo before-restart", "a")
    cp = mesh.cli("exec", "--target", "a", "RUN sleep 1.5; echo across-restart")
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.strip()
    pidfile = mesh.root / "gone.pid"
    cp = mesh.cli("exec", "--target", "gone", f"RUN echo $$ > {pidfile}; sleep 30")
    assert cp.returncode == 0, cp.stderr
    gone_id = cp.stdout.strip()
    try:
        mesh.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10,
                      what="the job to start on node gone")
        mesh.wait_for(lambda: mesh.json("job", job_id)["status"] == "running", timeout=5,
                      what="the job to be running")
        mesh.stop_server()
        # While the server is down, node "gone" disappears for good.
        mesh.clients["gone"].signal(signal.SIGKILL)
        _kill_group_from(pidfile)
        mesh.server(node_expiry=3, heartbeat_interval=0.5)
        restarted = time.monotonic()

        # History survives the restart.
        old = mesh.json("job", done["id"])
        assert old["status"] == "success"
        assert old["results"]["a"]["stdout"] == "before-restart\n"
        assert {done["id"], job_id, gone_id} <= set(job_ids(mesh))
        assert mesh.json("job", job_id)["id"] == job_id

        def final(jid):
            d = mesh.json("job", jid)
            return d if d["status"] in FINAL else None

        # A job that was running on a node that came back finishes normally...
        doc = mesh.wait_for(lambda: final(job_id), timeout=15,
                            what="the job to finish after the restart", interval=0.25)
        assert doc["status"] == "success", doc
        assert doc["results"]["a"]["stdout"] == "across-restart\n"
        # ... and one on a node that never came back ends lost after its expiry (plus the
        # longest a live node may sit in its reconnect backoff: it is given that to return)
        doc = mesh.wait_for(lambda: final(gone_id), timeout=3 + RECONNECT_GRACE + 3,
                            what="the job of the vanished node to end", interval=0.25)
        assert doc["results"]["gone"]["status"] == "lost"
        assert time.monotonic() - restarted < 3 + RECONNECT_GRACE + 3
    finally:
        _kill_group_from(pidfile)
    mesh.wait_online("a")
    assert exec_wait(mesh, "RUN echo after-restart", "a")["status"] == "success"
