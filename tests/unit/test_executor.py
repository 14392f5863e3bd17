"""Tests for director.jobs.executor.execute with the REAL run_shell, in throw-away homes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from director.jobs.nodestate import CachedResult, JobCache, NodeState
from director.jobs.dsl import parse_line
from director.jobs.executor import OUTPUT_CAP, TRUNCATED, Outcome, Ran, execute, run_shell
from procs import gone


@pytest.fixture
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def state(home) -> NodeState:
    return NodeState(home)


@pytest.fixture
def cache(home):
    c = JobCache(home / "jobcache.db")
    yield c
    c.close()


def run(line: str, state: NodeState, cache: JobCache, **kw) -> Outcome:
    return execute(parse_line(line), state, cache, **kw)


# -- RUN ----------------------------------------------------------------------------------
def test_run_success(state, cache):
    out = run("RUN echo hello; echo oops >&2", state, cache)
    assert out.status == "success" and out.rc == 0
    assert out.stdout == "hello\n" and out.stderr == "oops\n"
    assert out.cached is False and out.exec_time > 0


def test_run_failure_keeps_rc_and_output(state, cache):
    out = run("RUN echo partial; echo bad >&2; exit 7", state, cache)
    assert out.status == "failed" and out.rc == 7
    assert out.stdout == "partial\n" and out.stderr == "bad\n"


def test_run_uses_bin_sh(state, cache):
    out = run("RUN test -n \"$0\" && echo $0", state, cache)
    assert out.status == "success" and out.stdout.strip() == "/bin/sh"


def test_run_default_workdir_is_in_home(state, cache, home):
    out = run("RUN pwd", state, cache)
    assert out.stdout.strip() == str(home / "work")


def test_timeout_kills_the_whole_process_group(state, cache):
    start = time.monotonic()
    out = run("RUN --timeout 0.5 sleep 30 & echo $!; sleep 30", state, cache)
    took = time.monotonic() - start
    assert out.status == "timeout"
    assert took < 10
    assert "timed out" in out.error
    pid = int(out.stdout.split()[0])  # the background sleep, printed before the timeout
    deadline = time.monotonic() + 5
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid), f"background process {pid} survived the timeout"


def test_timeout_is_not_cached(state, cache):
    assert run("RUN --timeout 0.3 sleep 5", state, cache).status == "timeout"
    assert run("RUN --timeout 0.3 sleep 5", state, cache).cached is False


def test_run_shell_direct():
    ran = run_shell("printf abc; exit 3", "/", dict(os.environ), 10)
    assert ran == Ran(3, b"abc", b"", False)


def test_output_cap_marks_truncation(state, cache):
    size = OUTPUT_CAP + 5000
    out = run(f"RUN head -c {size} /dev/zero | tr '\\0' a; printf small >&2", state, cache)
    assert out.status == "success"
    assert out.stdout.endswith(TRUNCATED)
    assert len(out.stdout) == OUTPUT_CAP + len(TRUNCATED)
    assert out.stdout[:OUTPUT_CAP] == "a" * OUTPUT_CAP
    assert out.stderr == "small"  # under the cap: untouched


def test_output_exactly_at_cap_is_not_marked(state, cache):
    out = run(f"RUN head -c {OUTPUT_CAP} /dev/zero | tr '\\0' b", state, cache)
    assert out.stdout == "b" * OUTPUT_CAP


def test_non_utf8_output_is_replaced_not_fatal(state, cache):
    out = run("RUN printf '\\377\\376ok'", state, cache)
    assert out.status == "success" and out.stdout.endswith("ok")


# -- ARG / ENV / WORKDIR ------------------------------------------------------------------
def test_arg_env_workdir_persist_across_reloads(home, state, cache):
    assert run("ARG GREETING=hello", state, cache).status == "success"
    assert run("ARG TARGET world", state, cache).status == "success"
    assert run("ENV COLOR=blue", state, cache).status == "success"
    assert run("WORKDIR app/sub", state, cache).status == "success"
    assert (home / "work" / "app" / "sub").is_dir()

    again = NodeState(home)  # a client restart reads the saved state
    args, env, workdir = again.snapshot()
    assert args == {"GREETING": "hello", "TARGET": "world"}
    assert env == {"COLOR": "blue"}
    assert workdir == str(home / "work" / "app" / "sub")
    out = run("RUN echo ${GREETING} {{ TARGET }} $COLOR; pwd", again, cache)
    assert out.status == "success"
    assert out.stdout == f"hello world blue\n{home / 'work' / 'app' / 'sub'}\n"


def test_workdir_is_relative_to_the_base_not_the_previous(home, state, cache):
    run("WORKDIR a", state, cache)
    run("WORKDIR a", state, cache)
    assert state.snapshot()[2] == str(home / "work" / "a")
    run("WORKDIR ../outside", state, cache)
    assert state.snapshot()[2] == str(home / "outside")


def test_workdir_absolute(tmp_path, state, cache):
    target = tmp_path / "abs" / "dir"
    assert run(f"WORKDIR {target}", state, cache).status == "success"
    assert run("RUN pwd", state, cache).stdout.strip() == str(target)


def test_workdir_that_cannot_be_created_fails(tmp_path, state, cache):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run(f"WORKDIR {blocker}/sub", state, cache)
    assert out.status == "failed" and "WORKDIR" in out.error


def test_removed_workdir_is_recreated(tmp_path, state, cache):
    wd = tmp_path / "gone"
    run(f"WORKDIR {wd}", state, cache)
    wd.rmdir()
    assert run("RUN pwd", state, cache).stdout.strip() == str(wd)


def test_workdir_that_cannot_be_recreated_fails_cleanly(tmp_path, state, cache):
    base = tmp_path / "base"
    run(f"WORKDIR {base}/wd", state, cache)
    (base / "wd").rmdir()
    base.rmdir()
    base.write_text("now a file")  # the WORKDIR cannot be made again
    out = run("RUN echo never", state, cache)
    assert out.status == "failed" and "WORKDIR" in out.error and out.stdout == ""


def test_substitution_forms(state, cache):
    run("ARG NAME=world", state, cache)
    out = run("RUN echo ${NAME} {{ NAME }} {{NAME}} ${UNSET_X}-", state, cache)
    assert out.stdout == "world world world -\n"  # unknown ${X}: left to the shell


def test_arg_value_may_use_earlier_args(state, cache):
    run("ARG A=one", state, cache)
    run("ARG B=${A}-two", state, cache)
    assert state.snapshot()[0]["B"] == "one-two"


def test_env_is_in_the_environment_not_substituted(state, cache):
    run("ENV ONLY_ENV=secret-ish", state, cache)
    out = run("RUN echo [${ONLY_ENV}] [$ONLY_ENV]", state, cache)
    # ${ONLY_ENV} is not an ARG, so the shell expands it from the environment.
    assert out.stdout == "[secret-ish] [secret-ish]\n"


def test_stdout_arg_stores_trimmed_stdout(state, cache):
    out = run("RUN --stdout-arg VERSION printf '  1.2.3 \\n\\n'", state, cache)
    assert out.status == "success"
    assert state.snapshot()[0]["VERSION"] == "1.2.3"
    assert run("RUN echo v${VERSION}", state, cache).stdout == "v1.2.3\n"


def test_stdout_arg_not_set_on_failure(state, cache):
    run("RUN --stdout-arg X sh -c 'echo nope; exit 1'", state, cache)
    assert "X" not in state.snapshot()[0]


def test_bad_chown_after_substitution_fails_cleanly(state, cache):
    out = run("COPY --chown ${NOBODY_SET} a b", state, cache,
              copier=lambda i, wd: Outcome("success"))
    assert out.status == "failed" and "chown" in out.error


def test_copy_without_copier_fails_clearly(state, cache):
    out = run("COPY a b", state, cache)
    assert out.status == "failed" and "not available" in out.error


# -- the job cache ------------------------------------------------------------------------
def test_cache_hit_does_not_run_again(tmp_path, state, cache):
    side = tmp_path / "side"
    line = f"RUN echo ran >> {side}; echo result"
    first = run(line, state, cache)
    assert first.status == "success" and first.cached is False
    second = run(line, state, cache)
    assert second.status == "success" and second.cached is True
    assert second.stdout == "result\n" and second.rc == 0
    assert side.read_text() == "ran\n"  # the command ran exactly once


def test_skip_cache_runs_again(tmp_path, state, cache):
    side = tmp_path / "side"
    run(f"RUN echo ran >> {side}", state, cache)
    out = run(f"RUN --skip-cache echo ran >> {side}", state, cache)
    assert out.cached is False
    assert side.read_text() == "ran\nran\n"


def test_options_do_not_change_the_hash(tmp_path, state, cache):
    side = tmp_path / "side"
    run(f"RUN echo ran >> {side}", state, cache)
    assert run(f"RUN --timeout 9 echo ran >> {side}", state, cache).cached is True
    assert side.read_text() == "ran\n"


def test_failures_are_not_cached(tmp_path, state, cache):
    side = tmp_path / "side"
    line = f"RUN echo ran >> {side}; exit 1"
    assert run(line, state, cache).status == "failed"
    out = run(line, state, cache)
    assert out.status == "failed" and out.cached is False
    assert side.read_text() == "ran\nran\n"


def test_changed_env_is_a_cache_miss(tmp_path, state, cache):
    side = tmp_path / "side"
    line = f"RUN echo $V >> {side}"
    run("ENV V=1", state, cache)
    run(line, state, cache)
    run("ENV V=2", state, cache)
    assert run(line, state, cache).cached is False
    assert side.read_text() == "1\n2\n"
    run("ENV V=1", state, cache)
    assert run(line, state, cache).cached is True  # back to a known state


def test_changed_workdir_is_a_cache_miss(tmp_path, state, cache):
    side = tmp_path / "side"
    line = f"RUN pwd >> {side}"
    run("WORKDIR one", state, cache)
    run(line, state, cache)
    run("WORKDIR two", state, cache)
    assert run(line, state, cache).cached is False
    assert [Path(p).name for p in side.read_text().split()] == ["one", "two"]


def test_changed_arg_value_is_a_cache_miss(tmp_path, state, cache):
    side = tmp_path / "side"
    line = f"RUN echo ${{X}} >> {side}"
    run("ARG X=a", state, cache)
    run(line, state, cache)
    run("ARG X=b", state, cache)
    assert run(line, state, cache).cached is False
    assert side.read_text() == "a\nb\n"


def test_hash_extra_is_part_of_the_key(tmp_path, state, cache):
    side = tmp_path / "side"
    line = f"RUN echo ran >> {side}"
    run(line, state, cache, hash_extra="x")
    assert run(line, state, cache, hash_extra="y").cached is False
    assert run(line, state, cache, hash_extra="x").cached is True


def test_cached_stdout_arg_is_still_set(state, cache, home):
    run("RUN --stdout-arg OUT echo value", state, cache)
    fresh = NodeState(home)
    fresh.update(arg=("OUT", "stale"))
    out = run("RUN --stdout-arg OUT echo value", fresh, cache)
    assert out.cached is True
    assert fresh.snapshot()[0]["OUT"] == "value"


def test_cache_survives_close_and_reopen(tmp_path, home, state):
    side = tmp_path / "side"
    line = f"RUN echo ran >> {side}; echo out"
    c1 = JobCache(home / "jobcache.db")
    try:
        assert run(line, state, c1).cached is False
    finally:
        c1.close()
    c2 = JobCache(home / "jobcache.db")
    try:
        out = run(line, NodeState(home), c2)
        assert out.cached is True and out.stdout == "out\n"
    finally:
        c2.close()
    assert side.read_text() == "ran\n"


def test_jobcache_flush_and_bound(tmp_path):
    path = tmp_path / "c.db"
    c = JobCache(path, maxsize=3)
    for i in range(5):
        c.put(f"h{i}", CachedResult(0, f"o{i}", ""))
    assert c.get("h0") is None and c.get("h4") == CachedResult(0, "o4", "")
    c.flush()
    c.flush()  # nothing pending: harmless
    c.close()
    c = JobCache(path, maxsize=3)
    try:
        # The newest entries survive the bound (one flush writes them all in the same instant).
        assert [c.get(f"h{i}") is not None for i in range(5)] == [False, False, True, True, True]
        assert c.conn.execute("SELECT count(*) FROM cache").fetchone()[0] == 3
        c.put("h2", CachedResult(0, "again", ""))  # re-put: now the newest
        c.put("h5", CachedResult(0, "o5", ""))
    finally:
        c.close()
    c = JobCache(path, maxsize=3)
    try:
        assert c.get("h3") is None
        assert c.get("h2") == CachedResult(0, "again", "")
        assert c.get("h4") is not None and c.get("h5") is not None
    finally:
        c.close()


def test_damaged_state_file_starts_clean(home):
    (home / "state.json").write_text("{not json")
    s = NodeState(home)
    assert s.snapshot() == ({}, {}, str(home / "work"))
    (home / "state.json").write_text("[1, 2]")
    assert NodeState(home).snapshot() == ({}, {}, str(home / "work"))


def test_timeout_gives_up_on_a_pipe_held_outside_the_group(monkeypatch):
    """A grandchild that left the process group keeps stdout open: after the kill
    grace the job still ends (as a timeout) instead of waiting for it."""
    from director.jobs import shell

    monkeypatch.setattr(shell, "KILL_GRACE", 0.5)
    start = time.monotonic()
    ran = run_shell("setsid sleep 5 & echo $!; sleep 30", "/", None, 0.3)
    took = time.monotonic() - start
    outsider = int(ran.stdout.split()[0])
    try:
        os.kill(outsider, 9)  # not ours to leave behind
    except ProcessLookupError:
        pass
    assert ran.timed_out
    assert took < 3, f"took {took:.2f} s"


# -- values from a node are data (CONTRACT "Values from nodes are data") ------------------
HOSTILE = [
    "1.0; touch {m} #",
    "$(touch {m})",
    "`touch {m}`",
    "'; touch {m}; '",
    '"; touch {m}; "',
    "a\ntouch {m}",
    "x' \"$(touch {m})\" '",
    "{{{{ X }}}} ${{X}} $X",
    "back\\slash \\'; touch {m} #",
    "new\nline\n# and 'quote' \"dq\" `bt`",
]
SHELL_USES = [  # (command using the node value V, what it prints for V)
    ("printf '%s\\n' ${V}", "{v}"),
    ("printf '%s\\n' {{ V }}", "{v}"),
    ("printf '%s\\n' \"${V}\"", "{v}"),
    ("printf '%s\\n' 'in single ${V} quotes'", "in single {v} quotes"),
    ("printf '%s\\n' \"in \\\"double\\\" ${V} quotes\"", 'in "double" {v} quotes'),
    ("printf '%s\\n' pre${V}post", "pre{v}post"),
    ("printf '%s\\n' $(printf '%s' ${V})", None),  # word-split by the shell: only no touch
    ("printf '%s\\n' ok # comment ${V}", "ok"),
]


def _stdout_arg(state, cache, tmp_path, value: str) -> None:
    f = tmp_path / "value.txt"
    f.write_text(value)
    out = run(f"RUN --stdout-arg V cat {f}", state, cache)
    assert out.status == "success" and state.sourced()[1]["V"] == value.strip()


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize(("use", "printed"), SHELL_USES)
def test_node_value_is_never_shell_code(tmp_path, state, cache, hostile, use, printed):
    marker = tmp_path / "M"
    value = hostile.format(m=marker)
    _stdout_arg(state, cache, tmp_path, value)
    out = run(f"RUN --skip-cache {use}", state, cache)
    assert not marker.exists(), (use, value)
    assert out.status == "success", out
    if printed is not None:
        assert out.stdout == printed.format(v=value.strip()) + "\n"


def test_the_issue_reproduction_does_not_touch(tmp_path, state, cache):
    marker = tmp_path / "M"
    (tmp_path / "FILE").write_text(f"1.0; touch {marker} #\n")
    assert run(f"RUN --stdout-arg VER cat {tmp_path / 'FILE'}", state, cache).status == "success"
    out = run("RUN echo ${VER}", state, cache)
    assert out.stdout == f"1.0; touch {marker} #\n" and not marker.exists()


@pytest.mark.parametrize("use", [
    "echo `echo ${V}`", "cat <<EOF\n${V}\nEOF", "echo \"$(echo ${V})\"", "echo \\${V}",
    "echo $'x' ${V}",
])
def test_node_value_where_it_cannot_be_quoted_fails_the_job(tmp_path, state, cache, use):
    marker = tmp_path / "M"
    _stdout_arg(state, cache, tmp_path, f"$(touch {marker})")
    out = run(f"RUN {use}", state, cache)
    assert out.status == "failed" and "cannot be quoted safely" in out.error
    assert "exec form" in out.error and not marker.exists()


def test_operator_args_stay_as_written(state, cache):
    run("ARG CMD=echo one; echo two", state, cache)
    out = run("RUN ${CMD}", state, cache)
    assert out.stdout == "one\ntwo\n"  # the operator wrote it: it is shell code


def test_operator_quotes_around_a_node_value_are_followed(tmp_path, state, cache):
    marker = tmp_path / "M"
    _stdout_arg(state, cache, tmp_path, f"$(touch {marker})")
    run("ARG Q=\"", state, cache)
    out = run("RUN echo ${Q}${V}${Q}", state, cache)
    assert out.stdout == f"$(touch {marker})\n" and not marker.exists()


def test_an_arg_built_from_a_node_value_is_a_node_value(tmp_path, state, cache):
    marker = tmp_path / "M"
    _stdout_arg(state, cache, tmp_path, f"; touch {marker}")
    assert run("ARG W=v${V}", state, cache).status == "success"
    args, node_args, _, _ = state.sourced()
    assert node_args["W"] == f"v; touch {marker}" and "W" not in args
    out = run("RUN echo ${W}", state, cache)
    assert out.stdout == f"v; touch {marker}\n" and not marker.exists()
    run("ARG W=plain", state, cache)  # rewritten by the operator: theirs again
    assert state.sourced()[0]["W"] == "plain" and "W" not in state.sourced()[1]


def test_node_values_persist_as_node_values(tmp_path, home, state, cache):
    _stdout_arg(state, cache, tmp_path, "a;b")
    again = NodeState(home)
    assert again.sourced()[1] == {"V": "a;b"} and "V" not in again.sourced()[0]
    assert again.snapshot()[0]["V"] == "a;b"


def test_cached_stdout_arg_is_a_node_value(tmp_path, state, cache):
    _stdout_arg(state, cache, tmp_path, "1;2")
    run("ARG V=x", state, cache)
    assert "V" not in state.sourced()[1]
    out = run(f"RUN --stdout-arg V cat {tmp_path / 'value.txt'}", state, cache)
    assert out.cached and state.sourced()[1]["V"] == "1;2"


def test_node_values_in_other_fields_are_literal(tmp_path, state, cache):
    _stdout_arg(state, cache, tmp_path, "dir; $(x) 'q'")
    out = run("WORKDIR ${V}", state, cache)
    assert out.status == "success"
    assert state.snapshot()[2] == str(state.default_workdir) + "/dir; $(x) 'q'"
    seen = []
    run("COPY a ${V}/", state, cache, copier=lambda i, wd: seen.append(i) or Outcome("success"))
    assert seen[0].dest == "dir; $(x) 'q'/"
    run("ENV E=${V}", state, cache)
    assert run("RUN printf '%s' \"$E\"", state, cache).stdout == "dir; $(x) 'q'"


# -- RUN exec form: argv with no shell ----------------------------------------------------
def test_exec_form_runs_argv_without_a_shell(tmp_path, state, cache):
    marker = tmp_path / "M"
    out = run(f'RUN ["printf", "%s|", "a; touch {marker}", "$(touch {marker})", "$0", "*"]',
              state, cache)
    assert out.status == "success"
    assert out.stdout == f"a; touch {marker}|$(touch {marker})|$0|*|" and not marker.exists()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_exec_form_gets_node_values_as_plain_arguments(tmp_path, state, cache, hostile):
    marker = tmp_path / "M"
    value = hostile.format(m=marker)
    _stdout_arg(state, cache, tmp_path, value)
    run("ARG OP=op; erator", state, cache)
    out = run('RUN ["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", '
              '"${V}", "x{{ V }}y", "${OP}", "${UNSET}"]', state, cache)
    assert out.status == "success", out
    import json
    assert json.loads(out.stdout) == [value.strip(), f"x{value.strip()}y", "op; erator",
                                      "${UNSET}"]
    assert not marker.exists()


def test_exec_form_missing_program_fails_clearly(state, cache):
    out = run('RUN ["/no/such/program", "x"]', state, cache)
    assert out.status == "failed" and "cannot run '/no/such/program'" in out.error


def test_exec_form_timeout_kills_the_group(state, cache):
    t = time.monotonic()
    out = run('RUN --timeout 0.5 ["sleep", "30"]', state, cache)
    assert out.status == "timeout" and time.monotonic() - t < 10


def test_exec_form_is_cached_and_sets_stdout_arg(state, cache):
    first = run('RUN --stdout-arg O ["echo", "hi there"]', state, cache)
    again = run('RUN --stdout-arg O ["echo", "hi there"]', state, cache)
    assert first.stdout == "hi there\n" and again.cached
    assert state.sourced()[1]["O"] == "hi there"


def test_exec_form_uses_the_env_path_and_workdir(tmp_path, state, cache):
    run("ENV FOO=bar", state, cache)
    run(f"WORKDIR {tmp_path}", state, cache)
    out = run('RUN ["sh", "-c", "echo $FOO; pwd"]', state, cache)
    assert out.stdout == f"bar\n{tmp_path}\n"
