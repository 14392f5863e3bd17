"""Tests for director.jobs.files: Directorfiles, directord YAML and command-line jobs."""

from __future__ import annotations

import pytest

from director.errors import DSLError
from director.jobs.dsl import Instruction, Options, parse_line
from director.jobs.files import (
    Step,
    load_orchestration,
    parse_directorfile,
    parse_job_text,
    parse_yaml,
)

DIRECTORD_YAML = """\
---
# a directord orchestration, unchanged
- name: deploy web
  targets:
    - web1
    - "db-*"
  async: true
  jobs:
    - ARG: VERSION 1.2.3
    - RUN: --skip-cache echo deploying {{ VERSION }}
    - COPY: --chown=user:group --chmod 0644 files/app.conf /etc/app/
    - ENV: MODE=prod
    - WORKDIR: /srv/app
    - RUN: >-
        echo one
        two
    - RUN: |
        set -e
        echo multi
- jobs:
    - run: --run-once --timeout 30 date
"""


def test_directord_yaml_example():
    steps = parse_yaml(DIRECTORD_YAML, "deploy.yaml")
    assert len(steps) == 2
    first, second = steps
    assert first.name == "deploy web"
    assert first.targets == ("web1", "db-*")
    assert first.async_ is True
    arg, run, copy, env, workdir, folded, literal = first.jobs
    assert (arg.verb, arg.name, arg.value, arg.line) == ("ARG", "VERSION", "1.2.3", 9)
    assert run.options.skip_cache and run.command == "echo deploying {{ VERSION }}"
    assert run.line == 10 and run.source == "deploy.yaml"
    assert copy.chown == "user:group" and copy.chmod == "0644"
    assert copy.sources == ("files/app.conf",) and copy.dest == "/etc/app/"
    assert (env.name, env.value) == ("MODE", "prod")
    assert workdir.path == "/srv/app"
    assert folded.command == "echo one two"
    assert literal.command == "set -e\necho multi"
    assert second == Step(jobs=(parse_line("run --run-once --timeout 30 date",
                                           source="deploy.yaml", line=21),))
    assert second.jobs[0].options == Options(timeout=30.0, run_once=True)


def test_yaml_defaults_and_flow_style():
    (step,) = parse_yaml("- {jobs: [{RUN: echo hi}], async: no, targets: []}", "x.yml")
    assert step.targets == () and step.async_ is False and step.name is None
    assert step.jobs[0].command == "echo hi"


def test_yaml_aliases_are_followed():
    steps = parse_yaml("- jobs: &j\n    - RUN: echo x\n- jobs: *j\n", "a.yaml")
    assert [s.jobs[0].command for s in steps] == ["echo x", "echo x"]


YAML_ERRORS = [
    ("", None, "no jobs in o.yaml"),
    ("# only a comment\n", None, "no jobs in o.yaml"),
    ("[]\n", None, "no jobs in o.yaml"),
    ("jobs: [RUN: x]\n", 1, "top level must be a list"),
    ("- jobs: [RUN: x]\n- 3\n", 2, "item 2 must be a mapping"),
    ("- jobs: [RUN: x]\n  tagets: [a]\n", 2, "unknown key 'tagets' in item 1"),
    ("- jobs: [RUN: x]\n  1: [a]\n", 2, "not a plain word"),
    ("- name: x\n", 1, "item 1 has no 'jobs'"),
    ("- jobs: []\n", 1, "must be a non-empty list"),
    ("- jobs:\n", 1, "must be a non-empty list"),
    ("- jobs: {RUN: x}\n", 1, "must be a non-empty list"),
    ("- jobs: [RUN: x]\n  jobs: [RUN: y]\n", 2, "'jobs' appears twice"),
    ("- jobs:\n  - RUN: x\n  - echo hi\n", 3, "exactly one verb key"),
    ("- jobs:\n  - {RUN: x, ENV: A=1}\n", 2, "exactly one verb key"),
    ("- jobs:\n  - FROM: fedora\n", 2, "unknown verb 'FROM'"),
    ("- jobs:\n  - RUN echo: hi\n", 2, "unknown verb 'RUN echo'"),
    ("- jobs:\n  - 5: hi\n", 2, "unknown verb"),
    ("- jobs:\n  - RUN: 42\n", 2, "arguments of RUN must be a string"),
    ("- jobs:\n  - RUN:\n", 2, "arguments of RUN must be a string"),
    ("- jobs:\n  - COPY: [a, b]\n", 2, "arguments of COPY must be a string"),
    ("- jobs:\n  - RUN: ok\n  - RUN: --bogus x\n", 3, "unknown option '--bogus'"),
    ("- jobs:\n\n  - COPY: onlyone\n", 3, "COPY needs at least one source"),
    ("- jobs: [RUN: x]\n  targets: web1\n", 2, "'targets' in item 1 must be a list"),
    ("- jobs: [RUN: x]\n  targets: [1]\n", 2, "'targets' in item 1 must be a list"),
    ("- jobs: [RUN: x]\n  targets: ['']\n", 2, "'targets' in item 1 must be a list"),
    ("- jobs: [RUN: x]\n  async: 1\n", 2, "'async' in item 1 must be true or false"),
    ("- jobs: [RUN: x]\n  async: 'maybe'\n", 2, "'async' in item 1 must be true or false"),
    ("- jobs: [RUN: x]\n  async: !!bool maybe\n", 2, "'async' in item 1 must be true or false"),
    ("- jobs: [RUN: x]\n  name: [a]\n", 2, "'name' in item 1 must be a string"),
    ("- jobs: [RUN: x]\n  name: 12\n", 2, "'name' in item 1 must be a string"),
    ("- jobs: [RUN: x\n", 2, "invalid YAML"),
    ("- jobs:\n  - RUN: a\n   - RUN: b\n", 3, "invalid YAML"),
    ("- jobs: [RUN: x]\n---\n- jobs: [RUN: y]\n", 2, "invalid YAML"),
    ("- !!python/object/apply:os.system\n  jobs: [RUN: x]\n", 1, "unsupported YAML tag"),
    ("- jobs: !custom [RUN: x]\n", 1, "unsupported YAML tag"),
    ("- jobs:\n  - RUN: !!python/name:os.system x\n", 2, "must be a string"),
    ("- " * 1200 + "x", None, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "line", "message"), YAML_ERRORS)
def test_yaml_errors(text, line, message):
    with pytest.raises(DSLError) as info:
        parse_yaml(text, "o.yaml")
    assert message in info.value.message
    assert info.value.source == "o.yaml"
    if line is not None:
        assert info.value.line == line
        assert str(info.value).startswith(f"o.yaml:{line}: ")


# --------------------------------------------------------------------------- Directorfile

DIRECTORFILE = """\
# deploy the app
ARG VERSION=1.0

RUN echo building ${VERSION} # this hash is part of the command
  # an indented comment line
COPY --chown=app:app \\
     build/app \\
     /srv/app/
RUN apt-get install -y \\
    # comment inside a continuation is dropped
    curl
WORKDIR /srv
"""


def test_directorfile():
    (step,) = parse_directorfile(DIRECTORFILE, "Directorfile")
    assert step.targets == () and step.async_ is False and step.name is None
    arg, run, copy, install, workdir = step.jobs
    assert (arg.name, arg.value, arg.line) == ("VERSION", "1.0", 2)
    assert run.command == "echo building ${VERSION} # this hash is part of the command"
    assert run.line == 4
    assert copy.text == "COPY --chown=app:app build/app /srv/app/"
    assert (copy.sources, copy.dest, copy.chown, copy.line) == (("build/app",), "/srv/app/",
                                                                 "app:app", 6)
    assert install.command == "apt-get install -y curl" and install.line == 9
    assert workdir.path == "/srv" and workdir.line == 12
    assert all(job.source == "Directorfile" for job in step.jobs)


def test_directorfile_crlf_and_trailing_continuation():
    (step,) = parse_directorfile("RUN a \\\r\n  b\r\nRUN c \\", "D")
    assert [j.command for j in step.jobs] == ["a b", "c"]
    assert [j.line for j in step.jobs] == [1, 3]


@pytest.mark.parametrize(("text", "line", "message"), [
    ("RUN ok\nFROM fedora\n", 2, "unknown verb 'FROM'"),
    ("# c\n\nRUN ok\nCOPY a \\\n  \\\n\n", 4, "COPY needs at least one source"),
    ("RUN ok\nRUN --timeout \\\n  -3 x\n", 2, "--timeout must be a positive number"),
    ("\n\n   \n# nothing\n", None, "no jobs in D"),
    ("", None, "no jobs in D"),
])
def test_directorfile_errors(text, line, message):
    with pytest.raises(DSLError) as info:
        parse_directorfile(text, "D")
    assert message in info.value.message
    assert (info.value.source, info.value.line) == ("D", line)


# ------------------------------------------------------------------------------ job text

def test_job_text_single_line_has_no_line_number():
    (step,) = parse_job_text("RUN echo hi")
    assert step.jobs == (Instruction(verb="RUN", command="echo hi", source="<command line>",
                                     text="RUN echo hi"),)
    with pytest.raises(DSLError) as info:
        parse_job_text("FROM x")
    assert str(info.value).startswith("<command line>: unknown verb")


def test_job_text_several_lines():
    (step,) = parse_job_text("ARG A=1\n# comment\nRUN echo ${A} \\\n  more", source="cli")
    assert [(j.verb, j.line) for j in step.jobs] == [("ARG", 1), ("RUN", 3)]
    assert step.jobs[1].command == "echo ${A} more"
    with pytest.raises(DSLError) as info:
        parse_job_text("RUN ok\nBAD x")
    assert info.value.line == 2


@pytest.mark.parametrize("text", ["", "   ", "# just a comment"])
def test_job_text_empty(text):
    with pytest.raises(DSLError, match="no job given"):
        parse_job_text(text)


# ------------------------------------------------------------------------ load_orchestration

@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_load_yaml_by_suffix(tmp_path, suffix):
    path = tmp_path / f"deploy{suffix}"
    path.write_text(DIRECTORD_YAML, encoding="utf-8")
    steps = load_orchestration(path)
    assert len(steps) == 2 and steps[0].async_ is True
    assert steps[0].jobs[0].source == str(path)


def test_load_directorfile_for_other_names(tmp_path):
    path = tmp_path / "Directorfile"
    path.write_bytes(b"\xef\xbb\xbfRUN echo hi\n")  # a BOM must not become part of the verb
    (step,) = load_orchestration(str(path))
    assert step.jobs[0].command == "echo hi" and step.jobs[0].source == str(path)


def test_load_yaml_content_in_non_yaml_file_is_yaml(tmp_path):
    """Issue 15 item 9: YAML is recognised by its content too (was "unknown verb '-'")."""
    path = tmp_path / "deploy.txt"
    path.write_text("- jobs: [RUN: x]\n")
    (step,) = load_orchestration(path)
    assert step.jobs[0].command == "x" and step.jobs[0].line == 1


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(DSLError) as info:
        load_orchestration(path)
    assert info.value.source == str(path)
    assert "cannot read orchestration file" in info.value.message
    assert str(path) in str(info.value)


def test_load_directory(tmp_path):
    with pytest.raises(DSLError, match="cannot read orchestration file"):
        load_orchestration(tmp_path)


def test_load_not_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"- jobs: [RUN: \xff\xfe]\n")
    with pytest.raises(DSLError, match="not UTF-8"):
        load_orchestration(path)


def test_load_nul_in_path():
    with pytest.raises(DSLError, match="cannot read orchestration file"):
        load_orchestration("bad\x00name")


def test_load_yaml_error_reports_file_and_line(tmp_path):
    path = tmp_path / "o.yml"
    path.write_text("- jobs:\n    - RUN: ok\n    - WORKDIR: a b\n")
    with pytest.raises(DSLError) as info:
        load_orchestration(path)
    assert str(info.value).startswith(f"{path}:3: WORKDIR takes exactly one path")


def test_yaml_run_exec_form_as_a_list_or_a_string():
    from director.jobs.files import parse_yaml

    jobs = parse_yaml('- jobs:\n  - RUN: ["printf", "%s", "a; b", "$(x)"]\n'
                      "  - RUN: '--timeout 3 [\"echo\", \"hi\"]'\n", "o.yaml")[0].jobs
    assert jobs[0].argv == ("printf", "%s", "a; b", "$(x)") and jobs[0].command == ""
    assert jobs[0].line == 2
    assert jobs[1].argv == ("echo", "hi") and jobs[1].options.timeout == 3


@pytest.mark.parametrize("doc", ['- jobs:\n  - RUN: ["a", 1]\n', '- jobs:\n  - RUN: []\n',
                                 '- jobs:\n  - ENV: ["A", "B"]\n'])
def test_yaml_exec_form_errors(doc):
    from director.jobs.files import parse_yaml

    with pytest.raises(DSLError, match="o.yaml:2"):
        parse_yaml(doc, "o.yaml")


def test_directorfile_exec_form(tmp_path):
    from director.jobs.files import parse_job_text

    jobs = parse_job_text('RUN ["echo", "a \\\\ b"]\nRUN [ -f x ] && echo y\n')[0].jobs
    assert jobs[0].argv == ("echo", "a \\ b") and jobs[1].command == "[ -f x ] && echo y"
