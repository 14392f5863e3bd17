"""directord's orchestration shapes through a real server and agent (CONTRACT "More verbs",
"Templates"): per-job vars, CACHEFILE, ADD --blueprint, ECHO, CACHEEVICT, SERVICE (a
stand-in systemctl on the agent's PATH records its argv), templates with filters, the
async-time and async-transfer shapes, and the directord verbs refused by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
"""


def _node(mesh, name: str, tmp_path: Path) -> Path:
    """Enroll ``name`` and start its agent with a stand-in systemctl first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "systemctl.log"
    (bindir / "systemctl").write_text(SYSTEMCTL.format(log=log))
    (bindir / "systemctl").chmod(0o755)
    cp = mesh.enroll(name)
    assert cp.returncode == 0, cp.stderr
    proc = mesh.client(name, env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    mesh.wait_online(name, proc=proc)
    return log


def _orchestrate(mesh, path: Path, rc: int = 0) -> list[dict]:
    cp = mesh.cli("orchestrate", "--wait", "--json", str(path), timeout=120)
    assert cp.returncode == rc, (cp.returncode, cp.stdout, cp.stderr)
    return json.loads(cp.stdout)


def test_functional_tests_shape(mesh, tmp_path: Path):
    mesh.server()
    log = _node(mesh, "web1", tmp_path)
    out = tmp_path / "out"
    files = tmp_path / "files"
    files.mkdir()
    (files / "test-cache.yaml").write_text(
        "---\ntest_string_args: test\ntest_integer_args: 9000\ntest_float_args: 51.50\n"
        "test_boolean_args: true\ntest_nested_args:\n  test: true\ntest_array_args:\n- test\n")
    (files / "test-blueprint.yaml.j2").write_text(
        '---\ntest_stdout_arg: "{{ test_stdout_arg }}"\n'
        'test_runtime_arg: "{{ test_runtime_arg }}"\n'
        'test_integer_args: "{{ test_integer_args }}"\n'
        "test_array_args: {{ test_array_args }}\n"
        "hostile: '{{ hostile }}'\n")
    orch = tmp_path / "functional.yaml"
    orch.write_text(f"""---
- jobs:
  - RUN: --stdout-arg test_stdout_arg echo hello world 2
  - RUN: echo hello world 3
    vars:
      stdout_arg: test_stdout_arg2
  - RUN: printf '%s' '{{% raw %}}{{{{ 7 * 6 }}}}{{% endraw %}}'
    name: a label
    vars:
      stdout_arg: hostile
  - ARG: test_runtime_arg argument
  - WORKDIR: --chmod 0750 {out}
  - COPY: files/test-cache.yaml {out}/test-cache.yaml
  - CACHEFILE: {out}/test-cache.yaml
  - ADD: --blueprint files/test-blueprint.yaml.j2 {out}/
  - RUN: grep test_stdout_arg {out}/test-blueprint.yaml.j2 | grep "hello world 2"
  - RUN: echo "{{{{ test_array_args | first }}}}-{{{{ test_integer_args + 1 }}}}-${{hostile}}"
  - SERVICE: --skip-cache --daemon-reload --enable --restarted httpd.service
  - ECHO: test {{{{ test_nested_args.test }}}}
    vars:
      skip_cache: true
  - CACHEEVICT: all
""")
    docs = _orchestrate(mesh, orch)
    assert [d["results"]["web1"]["status"] for d in docs] == ["success"] * len(docs)
    result = [d["results"]["web1"] for d in docs]
    assert result[9]["stdout"] == "test-9001-{{ 7 * 6 }}\n"  # a node value is never rendered
    assert result[11]["stdout"] == "test True\n"
    assert oct(os.stat(out).st_mode & 0o777) == "0o750"
    rendered = (out / "test-blueprint.yaml.j2").read_text()
    assert rendered == ('---\ntest_stdout_arg: "hello world 2"\n'
                        'test_runtime_arg: "argument"\ntest_integer_args: "9000"\n'
                        "test_array_args: ['test']\nhostile: '{{ 7 * 6 }}'\n")
    assert log.read_text().splitlines() == ["daemon-reload", "enable httpd.service",
                                            "restart httpd.service"]

    # CACHEEVICT all emptied the node's values: a template naming one now fails, one line
    cp = mesh.cli("exec", "--wait", "--json", "RUN echo {{ test_runtime_arg }}")
    assert cp.returncode == 2
    [doc] = json.loads(cp.stdout)
    error = doc["results"]["web1"]["error"]
    assert "'test_runtime_arg' is undefined" in error and "\n" not in error


def test_sandbox_escape_fails_cleanly_on_the_node(mesh, tmp_path: Path):
    mesh.server()
    _node(mesh, "web1", tmp_path)
    marker = tmp_path / "M"
    for template in ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                     "{{ cycler.__init__.__globals__.os.system('touch %s') }}" % marker):
        cp = mesh.cli("exec", "--wait", "--json", f"RUN echo {template}")
        assert cp.returncode == 2, cp.stderr
        [doc] = json.loads(cp.stdout)
        error = doc["results"]["web1"]["error"]
        assert error.startswith("<command line>: template error: access to attribute")
        assert "\n" not in error
    assert not marker.exists()
    cp = mesh.cli("job", "last")
    assert cp.returncode != 0 or "Traceback" not in cp.stdout


def test_async_time_and_transfer_shapes(mesh, tmp_path: Path):
    mesh.server()
    _node(mesh, "web1", tmp_path)
    src = tmp_path / "services"
    src.write_bytes(os.urandom(200_000))
    dst = tmp_path / "dst"
    orch = tmp_path / "async.yaml"
    orch.write_text("---\n" + "".join(
        f"- async: {word}\n  jobs:\n" + "".join(
            f"  - RUN: --skip-cache sleep {seconds}\n" for _ in range(3))
        for word, seconds in (('"true"', 1), ("yes", 1), ("true", 1))) + "".join(
        "- async: true\n  jobs:\n" + "".join(
            f"  - ADD: {src} {dst}/test{i}-{j}\n" for j in range(1, 4))
        for i in range(2)))
    start = time.monotonic()
    docs = _orchestrate(mesh, orch)
    elapsed = time.monotonic() - start
    assert len(docs) == 15 and all(d["results"]["web1"]["status"] == "success" for d in docs)
    assert elapsed < 8, f"9 s of sleeps took {elapsed:.1f} s: the async items did not overlap"
    for i in range(2):
        for j in range(1, 4):
            assert (dst / f"test{i}-{j}").read_bytes() == src.read_bytes()


def test_directord_verbs_director_does_not_have_are_refused(mesh, tmp_path: Path):
    mesh.server()
    orch = tmp_path / "facter.yaml"
    orch.write_text("- jobs:\n  - RUN: echo hi\n  - FACTER: ''\n")
    before = mesh.json("jobs")
    cp = mesh.cli("orchestrate", str(orch))
    assert cp.returncode != 0 and cp.stdout == ""
    assert cp.stderr.strip().splitlines() == [cp.stderr.strip()]
    assert "unsupported verb FACTER (directord)" in cp.stderr
    cp = mesh.cli("exec", "POD list")
    assert cp.returncode != 0 and "unsupported verb POD (directord)" in cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1
    assert mesh.json("jobs") == before  # nothing submitted
