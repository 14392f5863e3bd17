"""Issue 15 item 9: an unquoted job line and a YAML file without a .yaml suffix.

* ``director exec RUN --skip-cache true`` (the shell split the job line, so click sees
  ``--skip-cache`` as an exec option): one line saying to quote the whole job line.
* A YAML orchestration named without ``.yaml``/``.yml`` is recognised by its content
  (it used to be read as a Directorfile: "unknown verb '-'").
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from director.errors import DSLError
from director.jobs.files import load_orchestration, looks_like_yaml, parse_job_text


def _director(*args: str, home: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIRECTOR_")}
    return subprocess.run([sys.executable, "-m", "director", "--home", home, *args],
                          capture_output=True, text=True, timeout=30, env=env,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "quoted"), [
    (["exec", "RUN", "--skip-cache", "true"], "director exec 'RUN --skip-cache true'"),
    (["exec", "--wait", "RUN", "ls", "-la"], "director exec --wait 'RUN ls -la'"),
    (["exec", "-t", "web1", "run", "--timeout=5", "sleep", "1"],
     "director exec -t web1 'run --timeout=5 sleep 1'"),
])
def test_unquoted_job_line_gets_one_line_saying_to_quote_it(tmp_path, args, quoted):
    cp = _director(*args, home=str(tmp_path / "h"))
    assert cp.returncode == 2 and cp.stdout == ""
    lines = cp.stderr.splitlines()
    assert len(lines) == 1, cp.stderr
    assert lines[0].startswith("director: No such option")
    assert f"quote the whole job line: {quoted}" in lines[0]
    assert not (tmp_path / "h").exists()  # nothing written, nothing sent


def test_a_mistyped_exec_option_is_not_called_part_of_the_job(tmp_path):
    cp = _director("exec", "--tagret", "web1", "RUN true", home=str(tmp_path / "h"))
    assert cp.returncode == 2 and len(cp.stderr.splitlines()) == 1
    assert "Did you mean" in cp.stderr and "'--target'" in cp.stderr
    assert "quote" not in cp.stderr


@pytest.mark.parametrize("text", [
    "- jobs: [RUN: x]\n",
    "# deploy\n\n  # indented comment\n- targets: [web*]\n  jobs:\n    - RUN: x\n",
    "---\n- jobs:\n  - RUN: x\n",
    "%YAML 1.1\n---\n- jobs: [RUN: x]\n",
    "[{jobs: [{RUN: x}]}]\n",
    "-\n  jobs: [RUN: x]\n",
])
def test_yaml_is_recognised_by_content(tmp_path, text):
    assert looks_like_yaml(text)
    path = tmp_path / "site"  # no suffix
    path.write_text(text)
    (step,) = load_orchestration(path)
    assert [j.command for j in step.jobs] == ["x"] and step.jobs[0].source == str(path)


@pytest.mark.parametrize("text", [
    "RUN echo -\n", "# - not yaml\nRUN echo hi\n", "run --skip-cache echo hi\n", "",
    "\n# only comments\n", "COPY --chown=a:b x /y\n",
])
def test_directorfiles_stay_directorfiles(text):
    assert not looks_like_yaml(text)


def test_a_yaml_error_in_a_suffixless_file_names_file_and_line(tmp_path):
    path = tmp_path / "Sitefile"
    path.write_text("- jobs:\n    - RUN: x\n- jobs: [BOGUS: y]\n")
    with pytest.raises(DSLError) as info:
        load_orchestration(path)
    assert info.value.source == str(path) and info.value.line == 3
    assert "unknown verb 'BOGUS'" in str(info.value)


@pytest.mark.parametrize(("line", "hint"), [
    ("- RUN: echo hi", "this looks like YAML"),
    ("RUN: echo hi", "write 'RUN ARGS' ('RUN: ARGS' is the YAML form)"),
])
def test_yaml_forms_in_a_job_line_are_explained(line, hint):
    with pytest.raises(DSLError, match="unknown verb") as info:
        parse_job_text(line)
    assert hint in str(info.value)


def test_unknown_verb_without_yaml_look_has_no_yaml_hint():
    with pytest.raises(DSLError) as info:
        parse_job_text("RUNN echo")
    assert "YAML" not in str(info.value)
