"""Templates (CONTRACT "Templates"): Jinja2 in a sandbox, rendered on the node by
``plan.resolve``; values from a node stay data (never rendered, shell-quoted in RUN)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from director.errors import DSLError
from director.jobs.dsl import parse_line
from director.jobs.plan import job_hash, resolve, uses_node_values

QUERY = {"n1": {"base64_hosts": "aGVsbG8K"}, "n2": {"other": "x"}}


def command(line: str, args=None, node=None, scope=None) -> str:
    return resolve(parse_line(line), args or {}, node or {}, scope or {}).command


def sh(cmd: str) -> str:
    """What /bin/sh makes of ``cmd`` (the real shell, not a model of it)."""
    return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, text=True,
                          check=True).stdout


def test_directord_query_filters_work():
    line = ("RUN echo \"{{ query.values() | map(attribute='base64_hosts') | select('defined')"
            " | list | first }}\" | base64 -d")
    assert sh(command(line, scope={"query": QUERY})) == "hello\n"


def test_common_filters_and_statements_with_operator_values():
    args = {"PORTS": "80 443", "NAME": "web"}
    line = ("RUN {% for p in PORTS.split() %}echo {{ NAME | upper }}:{{ p | int + 1 }};"
            "{% endfor %}{{ NAME | default('x') | replace('w', 'W') }}")
    assert command(line, args) == "echo WEB:81;echo WEB:444;Web"


def test_operator_values_are_inserted_as_written():
    # no value from a node: the operator's text is shell syntax, as with ${NAME}
    assert command("RUN {{ CMD | trim }} && echo ${NAME}",
                   {"CMD": " echo a | tr a b ", "NAME": "n"}) == "echo a | tr a b && echo n"


def test_dollar_names_keep_working_beside_templates():
    out = command("RUN echo ${A} {{ B | lower }} ${UNSET} ${V}", {"A": "1", "B": "X"},
                  {"V": "two words"})
    assert out == "echo 1 x ${UNSET} 'two words'"


@pytest.mark.parametrize("value", [
    "1; touch /tmp/never-{pid}", "$(touch /tmp/never-{pid})", "`id`", "'; id; '", '"; id; "',
    "{{ 7 * 7 }}", "${A}", "{% raw %}x", "a\nb",
])
def test_node_values_are_data_in_every_place(value, tmp_path):
    value = value.replace("{pid}", tmp_path.name)
    node = {"V": value}
    scope = {"query": {"n1": {"v": value}}}
    lines = [
        "RUN printf '%s\\n' {{ V | trim }}",
        "RUN printf '%s\\n' \"x{{ V }}y\" 'x{{ V }}y'",
        "RUN printf '%s\\n' {% for k, v in query.items() %}{{ v.v }}{% endfor %}",
        "RUN printf '%s\\n' {{ query.n1.v }} ${V}",
    ]
    expected = [value.strip(), f"x{value}y\nx{value}y", value, f"{value}\n{value}"]
    for line, want in zip(lines, expected):
        out = command(line, {"A": "op"}, node, scope)
        assert sh(out) == want + "\n", (line, out)


def test_node_values_in_exec_form_and_paths_are_literal():
    node = {"V": "{{ 7 * 7 }} $(id)"}
    res = resolve(parse_line('RUN ["printf", "%s", "a{{ V | trim }}b"]'), {}, node)
    assert res.argv == ("printf", "%s", "a{{ 7 * 7 }} $(id)b")
    res = resolve(parse_line("WORKDIR '/srv/{{ V | replace(\" \", \"_\") }}'"), {}, node)
    assert res.path == "/srv/{{_7_*_7_}}_$(id)"


def test_reading_a_node_value_marks_an_arg_as_node_data():
    instr = parse_line("ARG X={{ query.n1.v | upper }}")
    assert uses_node_values(instr, {}, {"query": {}})
    assert not uses_node_values(parse_line("ARG X={{ A | upper }}"), {"V": "1"})


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('id') }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ ().__class__.__base__ }}",
    "{{ A.__class__ }}",
    "{{ A | attr('__class__') }}",
    "{{ lipsum | attr('__globals__') }}",
    "{{ dict.mro() }}",
    "{{ [].append(1) }}",
    "{{ joiner.__init__.__globals__.__builtins__ }}",
    "{{ query.n1.update({'v': 1}) }}",          # immutable: no mutation of values
    "{{ '{0.__class__}'.format(A) }}",
    "{{ range(10**9) | list }}",
    "{{ 'a' * 100000000 }}",
    "{{ (2 ** 1000) ** 1000 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '{:>999999999}'.format('x') }}",
    "{{ '{0:{1}}'.format('x', 999999999) }}",
    "{{ '%999999999s' | format('x') }}",
    "{{ 'x' | center(999999999) }}",
    "{{ 'x' | indent(999999999) }}",
    "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
])
def test_sandbox_escapes_fail_with_one_line(template):
    with pytest.raises(DSLError) as info:
        command(f"RUN echo {template}", {"A": "x"}, {}, {"query": {"n1": {"v": "s"}}})
    message = str(info.value)
    assert message.startswith("template error: ") and "\n" not in message
    assert "Traceback" not in message


def test_sandbox_escape_through_the_cli_is_one_line(tmp_path):
    """A template escape never reaches a node: the CLI refuses nothing here (templates are
    rendered on the node), so check the node's rendering error as the agent reports it."""
    code = ("from director.jobs.dsl import parse_line\n"
            "from director.jobs.nodestate import JobCache, NodeState\n"
            "from director.jobs.executor import execute\n"
            "from pathlib import Path\n"
            "import sys\n"
            "home = Path(sys.argv[1])\n"
            "out = execute(parse_line(sys.argv[2]), NodeState(home), JobCache(home / 'c.db'))\n"
            "print(out.status); print(out.error)\n")
    cp = subprocess.run([sys.executable, "-c", code, str(tmp_path),
                         "RUN echo {{ ''.__class__.__mro__[1].__subclasses__() }}"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    status, error = cp.stdout.splitlines()
    assert status == "failed" and error.startswith("template error: access to attribute")


def test_bounded_operations_still_work():
    assert command("RUN echo {{ '%05d|%-3s|' % (7, 'a') }}{{ '{:>4}'.format('x') }}"
                   "{{ 'x' | center(5) }}|{{ '%s-%s' | format('a', 1) }}|{{ 2 ** 10 }}") == \
        "echo 00007|a  |   x  x  |a-1|1024"


def test_undefined_names_and_syntax_errors_are_errors():
    with pytest.raises(DSLError, match="'MISSING' is undefined"):
        command("RUN echo {{ MISSING }}")
    with pytest.raises(DSLError, match="template error"):
        command("RUN echo {{ A.b }}", {"A": "s"})
    with pytest.raises(DSLError, match="template error"):
        command("RUN echo {% if %}")


def test_capturing_statements_are_refused_only_with_node_values():
    line = "RUN {% filter upper %}echo {{ V }}{% endfilter %}"
    assert command(line, {"V": "a"}) == "ECHO A"  # operator value: any statement
    with pytest.raises(DSLError, match="FilterBlock statements cannot be used"):
        command(line, {}, {"V": "a"})
    with pytest.raises(DSLError, match="Macro statements"):
        command("RUN {% macro m() %}{{ V }}{% endmacro %}{{ m() }}", {}, {"V": "a"})


def test_plain_placeholders_do_not_load_jinja():
    code = ("import sys\n"
            "from director.jobs.dsl import parse_line\n"
            "from director.jobs.plan import resolve\n"
            "r = resolve(parse_line('RUN echo ${A} {{ A }} {{{ A }}}'), {'A': 'x'})\n"
            "assert r.command == 'echo x x {x}', r.command\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('jinja2'))))\n")
    cp = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == []


def test_vars_from_yaml_are_in_scope_and_in_the_hash():
    from director.jobs.files import parse_yaml

    [step] = parse_yaml("- jobs:\n  - RUN: echo {{ vars.port + 1 }} {{ vars.names | join(',') }}\n"
                        "    vars: {port: 80, names: [a, b]}\n", "f.yaml")
    [job] = step.jobs
    assert resolve(job, {}).command == "echo 81 a,b"
    plain = parse_line(job.text)
    assert job_hash(job, env={}, workdir="/w") != job_hash(plain, env={}, workdir="/w")


def test_template_expressions_with_spaces_stay_one_path():
    # directord's ghost-blog: a filter with quotes and spaces inside a destination
    line = ('ADD --blueprint files/ghost.service '
            '/etc/systemd/system/ghost-{{ domain_name | replace(".", "-") }}.service')
    instr = parse_line(line)
    assert instr.sources == ("files/ghost.service",)
    assert instr.dest == '/etc/systemd/system/ghost-{{ domain_name | replace(".", "-") }}.service'
    assert parse_line(instr.describe()).dest == instr.dest
    res = resolve(instr, {"domain_name": "ghost.example.org"})
    assert res.dest == "/etc/systemd/system/ghost-ghost-example-org.service"
    svc = parse_line("SERVICE --restarted ghost-{{ d | replace('.', '-') }}.service x")
    assert resolve(svc, {"d": "a.b"}).argv == ("ghost-a-b.service", "x")


def test_a_template_that_runs_too_long_is_stopped(monkeypatch):
    import time

    from director.jobs import templates

    monkeypatch.setattr(templates, "RENDER_SECONDS", 0.3)
    start = time.monotonic()
    with pytest.raises(DSLError, match="the template ran longer than 0.3 s"):
        command("RUN {% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}")
    assert time.monotonic() - start < 3
    assert sys.gettrace() is None  # the tracer is gone again
    assert command("RUN {% for i in range(3) %}{{ i }}{% endfor %}") == "012"
