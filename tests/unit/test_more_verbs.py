"""directord's other verbs (CONTRACT "More verbs"): SERVICE, ECHO, CACHEFILE, CACHEEVICT,
WORKDIR --chown/--chmod, --stderr-arg; the YAML job keys; the verbs refused by name.

Run with the real executor and real processes; systemctl is a stand-in script on PATH
that records its argv.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from director.errors import DSLError
from director.jobs.dsl import parse_line
from director.jobs.executor import execute
from director.jobs.files import parse_job_text, parse_yaml
from director.jobs.nodestate import JobCache, NodeState

RECORDER = """#!/bin/sh
printf '%s\\n' "$#" "$@" >> "{log}"
case " $* " in *" bad.service "*) echo "failed: $1" >&2; exit 3;; esac
"""


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


@pytest.fixture
def systemctl(tmp_path, monkeypatch) -> Path:
    """A stand-in systemctl first on PATH; returns the log of its calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bindir / "systemctl"
    script.write_text(RECORDER.format(log=log))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[list[str]]:
    words = log.read_text().splitlines() if log.exists() else []
    out = []
    while words:
        n = int(words.pop(0))
        out.append(words[:n])
        words = words[n:]
    return out


def run(line: str, state, cache):
    return execute(parse_line(line), state, cache)


# -- SERVICE ---------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "expected"), [
    ("SERVICE nginx.service", [["start", "nginx.service"]]),
    ("SERVICE --restarted a.service b@1.service", [["restart", "a.service", "b@1.service"]]),
    ("SERVICE --stopped x", [["stop", "x"]]),
    ("SERVICE --reloaded x", [["reload", "x"]]),
    ("SERVICE --daemon-reload --enable --restarted httpd.service",
     [["daemon-reload"], ["enable", "httpd.service"], ["restart", "httpd.service"]]),
    ("SERVICE --disable x", [["disable", "x"]]),
    ("SERVICE --mask --stopped x", [["mask", "x"], ["stop", "x"]]),
    ("SERVICE --unmask x", [["unmask", "x"], ["start", "x"]]),
])
def test_service_runs_systemctl_as_argv(line, expected, systemctl, state, cache):
    out = run(line, state, cache)
    assert out.status == "success", out
    assert calls(systemctl) == expected


def test_service_units_from_values_stay_one_argument(systemctl, state, cache):
    # a node value cannot become a second word, an option or shell code
    state.update(node_arg=("U", "web$(touch x)"))
    out = run("SERVICE --restarted --enable ${U}.service", state, cache)
    assert out.status == "failed" and "is not a unit name" in out.error
    state.update(node_arg=("U", "web"))
    out = run("SERVICE --restarted --enable ${U}.service", state, cache)
    assert out.status == "success"
    assert calls(systemctl) == [["enable", "web.service"], ["restart", "web.service"]]


def test_service_failure_stops_the_sequence(systemctl, state, cache):
    out = run("SERVICE --daemon-reload --enable --restarted bad.service", state, cache)
    assert (out.status, out.rc, out.stderr) == ("failed", 3, "failed: enable\n")
    assert calls(systemctl) == [["daemon-reload"], ["enable", "bad.service"]]


@pytest.mark.parametrize(("line", "message"), [
    ("SERVICE", "needs at least one unit"),
    ("SERVICE --restarted --stopped x", "takes one of --restarted, --stopped, --reloaded"),
    ("SERVICE --enable --disable x", "takes one of --enable"),
    ("SERVICE -- --now", "is not a unit name"),
    ("SERVICE 'a b'", "is not a unit name"),
    ("SERVICE --restarted=1 x", "takes no value"),
])
def test_service_bad_lines(line, message):
    with pytest.raises(DSLError, match=message):
        parse_line(line)


def test_service_is_cached_like_run(systemctl, state, cache):
    assert run("SERVICE --restarted x", state, cache).cached is False
    assert run("SERVICE --restarted x", state, cache).cached is True
    assert run("SERVICE --skip-cache --restarted x", state, cache).cached is False
    assert len(calls(systemctl)) == 2


# -- ECHO, --stderr-arg ------------------------------------------------------------------
def test_echo_prints_its_text_with_values(state, cache):
    state.update(arg=("WHO", "world"))
    out = run("ECHO hello ${WHO} {{ WHO | upper }}", state, cache)
    assert (out.status, out.stdout) == ("success", "hello world WORLD\n")


def test_stderr_arg_stores_stderr_as_node_data(state, cache):
    out = run("RUN --stderr-arg E --stdout-arg O echo out; echo ' err $(x) ' >&2", state, cache)
    assert out.status == "success"
    args, node, _, _ = state.sourced()
    assert node == {"O": "out", "E": "err $(x)"} and "E" not in args
    out = run("RUN printf '%s\\n' ${E}", state, cache)
    assert out.stdout == "err\n$(x)\n" or out.stdout == "err $(x)\n"
    # a cache hit sets it again
    state.evict("E")
    run("RUN --stderr-arg E --stdout-arg O echo out; echo ' err $(x) ' >&2", state, cache)
    assert state.sourced()[1]["E"] == "err $(x)"


# -- CACHEFILE, CACHEEVICT ---------------------------------------------------------------
def test_cachefile_loads_yaml_into_node_values(tmp_path, state, cache):
    f = tmp_path / "cache.yaml"
    f.write_text("---\ntest_string_args: test\ntest_integer_args: 9000\ntest_float_args: 51.50\n"
                 "test_boolean_args: true\ntest_nested_args:\n  test: true\n"
                 "test_array_args:\n- test\nwhen: 2024-01-02\n")
    out = run(f"CACHEFILE {f}", state, cache)
    assert out.status == "success", out
    node = state.sourced()[1]
    assert node["test_integer_args"] == 9000 and node["test_array_args"] == ["test"]
    assert node["when"] == "2024-01-02"
    out = run("RUN echo ${test_integer_args} {{ test_array_args[0] }} "
              "{{ test_nested_args.test }} {{ test_float_args }}", state, cache)
    assert out.stdout == "9000 test True 51.5\n"
    assert NodeState(state.path.parent).sourced()[1] == node  # persisted as they are


def test_cachefile_json_and_errors(tmp_path, state, cache):
    (tmp_path / "c.json").write_text(json.dumps({"A": "$(id)", "B": [1, {"c": None}]}))
    assert run(f"CACHEFILE {tmp_path / 'c.json'}", state, cache).status == "success"
    out = run("RUN echo {{ A }}", state, cache)
    assert out.stdout == "$(id)\n"  # node data: quoted
    bad = {
        "list.yaml": ("- a\n- b\n", "expected a mapping"),
        "key.yaml": ("'a b': 1\n", "is not a name"),
        "tag.yaml": ("a: !!python/object:os.system x\n", "invalid YAML"),
        "bomb.yaml": ("a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
            f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi")), "too many"),
        "big.yaml": ("a: " + "x" * (1024 * 1024 + 10) + "\n", "larger than"),
        "bin.yaml": (b"\xff\xfe", "not UTF-8"),
    }
    for name, (text, message) in bad.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = run(f"CACHEFILE {path}", state, cache)
        assert out.status == "failed" and message in out.error, (name, out.error)
        assert "\n" not in out.error
    out = run(f"CACHEFILE {tmp_path / 'missing.yaml'}", state, cache)
    assert out.status == "failed" and "No such file" in out.error


def test_cacheevict(state, cache, home):
    run("ARG A=1", state, cache)
    run("ENV E=2", state, cache)
    run("RUN --stdout-arg O echo 3", state, cache)
    run(f"WORKDIR {home}/w", state, cache)
    assert run("CACHEEVICT A", state, cache).status == "success"
    args, node, env, _ = state.sourced()
    assert "A" not in args and node == {"O": "3"} and env == {"E": "2"}
    run("CACHEEVICT envs", state, cache)
    assert state.sourced()[2] == {}
    run("RUN --stdout-arg O echo 3", state, cache)  # ENV is in the hash: a new job
    assert run("RUN --stdout-arg O echo 3", state, cache).cached is True
    run("CACHEEVICT jobs", state, cache)
    assert state.sourced()[1] == {"O": "3"}
    assert run("RUN --stdout-arg O echo 3", state, cache).cached is False
    run("CACHEEVICT all", state, cache)
    assert state.sourced() == ({}, {}, {}, state.default_workdir)
    assert run("RUN --stdout-arg O echo 3", state, cache).cached is False
    cache.flush()
    assert JobCache(home / "jobcache.db").get("x") is None


# -- WORKDIR --chmod/--chown -------------------------------------------------------------
def test_workdir_chmod_and_chown(tmp_path, state, cache):
    me = f"{os.getuid()}:{os.getgid()}"
    out = run(f"WORKDIR --chmod 0750 --chown {me} {tmp_path}/w", state, cache)
    assert out.status == "success", out
    st = os.stat(tmp_path / "w")
    assert stat.S_IMODE(st.st_mode) == 0o750 and (st.st_uid, st.st_gid) == (os.getuid(),
                                                                          os.getgid())
    out = run(f"WORKDIR --chown no_such_user_x {tmp_path}/w", state, cache)
    assert out.status == "failed" and "unknown user 'no_such_user_x'" in out.error


# -- refused verbs, YAML keys ------------------------------------------------------------
@pytest.mark.parametrize("verb", ["FACTER", "CONTAINER_IMAGE", "POD", "facter"])
def test_directord_verbs_director_does_not_have(verb):
    with pytest.raises(DSLError, match=f"^unsupported verb {verb.upper()} \\(directord\\)$"):
        parse_line(f"{verb} x")
    with pytest.raises(DSLError, match=f"unsupported verb {verb.upper()} \\(directord\\)"):
        parse_yaml(f"- jobs:\n  - RUN: echo\n  - {verb}: x\n", "f.yaml")
    with pytest.raises(DSLError, match="unsupported verb"):
        parse_job_text(f"RUN echo\n{verb} x")


def test_yaml_job_name_vars_and_async_words():
    steps = parse_yaml(
        "- async: 'true'\n  jobs:\n  - RUN: echo hello world 3\n    name: greet\n"
        "    vars:\n      stdout_arg: test_stdout_arg2\n      skip_cache: true\n"
        "      timeout: 30\n  - ECHO: test\n    vars:\n      skip_cache: true\n"
        "- async: 'no'\n  jobs:\n  - RUN: echo\n- async: 'yes'\n  jobs: [RUN: echo]\n",
        "f.yaml")
    assert [s.async_ for s in steps] == [True, False, True]
    run_job, echo = steps[0].jobs
    assert run_job.stdout_arg == "test_stdout_arg2" and run_job.options.skip_cache
    assert run_job.options.timeout == 30 and run_job.vars == ""
    assert echo.verb == "ECHO" and echo.options.skip_cache


@pytest.mark.parametrize(("text", "message"), [
    ("- async: maybe\n  jobs: [RUN: echo]\n", "'async' in item 1 must be true or false"),
    ("- jobs:\n  - RUN: echo\n    vars: [1]\n", "'vars' must be a mapping"),
    ("- jobs:\n  - RUN: echo\n    name: [1]\n", "'name' must be a string"),
    ("- jobs:\n  - RUN: echo\n    ECHO: x\n", "exactly one verb key"),
    ("- jobs:\n  - RUN: echo\n    vars: {stdout_arg: 'a b'}\n", "invalid name"),
    ("- jobs:\n  - RUN: echo\n    vars:\n      a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"      {c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
     "'vars': too many or too deeply nested values"),
])
def test_yaml_job_key_errors(text, message):
    with pytest.raises(DSLError, match=message):
        parse_yaml(text, "f.yaml")


# -- ADD --blueprint ---------------------------------------------------------------------
def _placing(content: bytes, target: Path):
    """A copier that places ``content`` at ``target`` (the transfer itself is tested in
    test_copy_driver and the integration tests; here only what --blueprint does after)."""
    from director.jobs.steps import Outcome

    def copier(res, workdir):
        target.write_bytes(content)
        target.chmod(0o640)
        return Outcome("success", rc=0, transfer={"files": 1, "skipped": 0, "bytes_sent": 1},
                       placed=[str(target)] if res.flags else None)
    return copier


def test_blueprint_renders_placed_files_with_node_values(tmp_path, state, cache):
    target = tmp_path / "app.conf"
    state.update(arg=("PORT", "8080"))
    state.update(node_values={"HOST": "{{ PORT }}$(id)", "LIST": [1, 2]})
    template = b"port={{ PORT | int + 1 }}\nhost={{ HOST }}\n{% for x in LIST %}{{ x }};{% endfor %}\n"
    out = execute(parse_line(f"ADD --blueprint src {target}"), state, cache,
                  copier=_placing(template, target))
    assert out.status == "success", out
    assert target.read_text() == "port=8081\nhost={{ PORT }}$(id)\n1;2;\n"  # node value: data
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and out.placed is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".director-tmp-")]
    out = execute(parse_line(f"ADD src {target}"), state, cache, copier=_placing(template, target))
    assert out.status == "success" and target.read_bytes() == template  # no --blueprint


@pytest.mark.parametrize(("content", "message"), [
    (b"{{ MISSING }}", "'MISSING' is undefined"),
    (b"{{ ''.__class__ }}", "access to attribute '__class__'"),
    (b"{% if %}", "template error"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_blueprint_errors_are_one_line(content, message, tmp_path, state, cache):
    target = tmp_path / "f"
    out = execute(parse_line(f"ADD --blueprint src {target}"), state, cache,
                  copier=_placing(content, target))
    assert out.status == "failed" and message in out.error and "\n" not in out.error
    assert out.error.startswith(f"--blueprint {target}")
    assert target.read_bytes() == content  # left as placed


def test_scope_values_are_node_data_for_templates(state, cache):
    # what QUERY and facts will hand the executor: seen by name, quoted in RUN, and an ARG
    # built from them is node data too
    scope = {"query": {"n1": {"v": "a; echo injected"}}}
    out = execute(parse_line("RUN echo {{ query.n1.v }}"), state, cache, scope=scope)
    assert out.stdout == "a; echo injected\n"
    execute(parse_line("ARG X={{ query.n1.v }}"), state, cache, scope=scope)
    args, node, _, _ = state.sourced()
    assert node["X"] == "a; echo injected" and "X" not in args
    assert run("RUN echo ${X}", state, cache).stdout == "a; echo injected\n"
