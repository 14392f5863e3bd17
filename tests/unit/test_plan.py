"""Tests for director.jobs.plan: ARG substitution, resolution and the job cache hash."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.errors import DSLError
from director.jobs.dsl import Instruction, Options, parse_line
from director.jobs.plan import job_hash, resolve, substitute

ARGS = {"NAME": "world", "A": "1", "EMPTY": "", "LOOP": "${NAME}", "BRACES": "{{ A }}"}


@pytest.mark.parametrize(("text", "expected"), [
    ("hello ${NAME}", "hello world"),
    ("hello {{ NAME }}", "hello world"),
    ("hello {{NAME}}", "hello world"),
    ("hello {{   NAME\t}}", "hello world"),
    ("${A}${A}{{A}}", "111"),
    ("x${EMPTY}y", "xy"),
    ("${UNKNOWN} stays", "${UNKNOWN} stays"),
    ("{{ UNKNOWN }} stays", "{{ UNKNOWN }} stays"),
    ("$NAME is for the shell", "$NAME is for the shell"),
    ("${NAME:-default}", "${NAME:-default}"),
    ("${ NAME }", "${ NAME }"),
    ("{{ NAME.x }}", "{{ NAME.x }}"),
    ("${name}", "${name}"),  # names are case-sensitive
    ("${LOOP}", "${NAME}"),  # single pass: a value is never expanded again
    ("${BRACES}", "{{ A }}"),
    ("$${NAME}", "$world"),
    ("{{{ NAME }}}", "{world}"),
    ("", ""),
])
def test_substitute(text, expected):
    assert substitute(text, ARGS) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80).filter(lambda s: "${" not in s and "{{" not in s),
       st.dictionaries(st.from_regex(r"[A-Za-z_]\w{0,5}", fullmatch=True), st.text(max_size=5)))
def test_property_text_without_placeholders_is_unchanged(text, args):
    assert substitute(text, args) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="${}AB_ x", max_size=40))
def test_property_empty_args_change_nothing(text):
    assert substitute(text, {}) == text


def test_resolve_substitutes_only_the_listed_fields():
    run = parse_line("RUN --skip-cache --stdout-arg OUT echo ${NAME} {{ A }} $HOME", line=4)
    resolved = resolve(run, ARGS)
    assert resolved.command == "echo world 1 $HOME"
    assert resolved.stdout_arg == "OUT" and resolved.options == Options(skip_cache=True)
    assert (resolved.line, resolved.text) == (4, run.text)  # metadata keeps the original
    assert run.command == "echo ${NAME} {{ A }} $HOME"  # the input is not modified

    copy = resolve(parse_line("COPY --chown ${USER}:{{ GROUP }} --chmod 644 ${SRC} x /d/${A}/"),
                   {"USER": "app", "GROUP": "0", "SRC": "a b", "A": "v"})
    assert copy.sources == ("a b", "x") and copy.dest == "/d/v/"
    assert copy.chown == "app:0" and copy.chmod == "644"

    env = resolve(parse_line("ENV GREETING=hello-${NAME}"), ARGS)
    assert (env.name, env.value) == ("GREETING", "hello-world")
    workdir = resolve(parse_line("WORKDIR /srv/{{ NAME }}"), ARGS)
    assert workdir.path == "/srv/world"


def test_resolve_never_touches_verb_name_or_options():
    instr = Instruction(verb="ARG", name="NAME", value="${A}", options=Options(timeout=5.0))
    resolved = resolve(instr, {"NAME": "x", "A": "1"})
    assert resolved == dataclasses.replace(instr, value="1")


def test_resolve_without_placeholders_is_identity():
    instr = parse_line("COPY --chown root:root --chmod 0600 a b /c")
    assert resolve(instr, ARGS) == instr


@pytest.mark.parametrize(("chown", "args"), [
    ("${U}:g", {}),  # the ARG is not set
    ("${U}", {"U": "two words"}),
    ("${U}:g", {"U": ""}),
])
def test_resolve_rejects_a_chown_that_is_invalid_once_resolved(chown, args):
    instr = parse_line(f"COPY --chown {chown} a b", source="D", line=9)
    with pytest.raises(DSLError) as info:
        resolve(instr, args)
    assert "--chown" in info.value.message and "ARG" in info.value.message
    assert (info.value.source, info.value.line) == ("D", 9)


# ----------------------------------------------------------------------------------- job_hash

BASE = parse_line("RUN echo hi")
ENV = {"A": "1", "B": "2"}


def _hash(instr=BASE, env=ENV, workdir="/srv", extra=""):
    return job_hash(instr, env=env, workdir=workdir, extra=extra)


def test_hash_shape_and_determinism():
    value = _hash()
    assert len(value) == 64 and int(value, 16) >= 0
    assert value == _hash(parse_line("RUN echo hi"))
    assert value == _hash(env={"B": "2", "A": "1"})  # env order does not matter


# Hashes as nodes have cached them since HASH_VERSION 1: a change here empties every
# node's cache on upgrade, so it must come with a HASH_VERSION bump.
@pytest.mark.parametrize(("line", "expected"), [
    ('RUN echo hi',
     "009257dfb3f9cdbd4bed6d2368a14d3f9594c0009ac807c94f5d726648507b57"),
    ('RUN --stdout-arg HOST --timeout 5 hostname',
     "4e735b43c976c643af905d75f01517e6c6b7b1ede8f65739e90cd71222ef8b50"),
    ("COPY --chmod 0644 --chown u:g a 'b c' /dst/",
     "e8eeb0c9fe7e0dfccc57e3723537128f661f4ee9ff76cb3863ed24ef9f1e789f"),
    ('ADD src dest',
     "73673664e41308aea6b234dd695f82b750f0741efe50a711edd66757e3179265"),
    ('ARG VERSION=1.2',
     "ec8bcd0ddd5d37752d114d85d63ccdb718fc4ff988292771b2ddc270c03c616a"),
    ('ENV PATH=/x:$PATH',
     "415e206f2a759ed6fde4300be411b4c1e53fc204b4631099d031c9ddf0036e10"),
    ('WORKDIR /srv/app',
     "1fc97eb9209e5cf45d693cb29f6f69b379f44389af703c369c8448fe811b4812"),
    ('RUN echo é ${X}',
     "e62a426cfb9764f65c99c3131aa950d7cc08effbff90ebd40cfb03ad645dca8c"),
])
def test_hash_is_byte_identical_to_cached_hashes(line, expected):
    assert job_hash(parse_line(line), env={"A": "1", "B": "ü"}, workdir="/w",
                    extra="m1") == expected


@pytest.mark.parametrize("changed", [
    {"instr": parse_line("RUN echo bye")},
    {"instr": parse_line("RUN echo  hi")},
    {"instr": parse_line("RUN --stdout-arg X echo hi")},
    {"env": {"A": "1"}},
    {"env": {"A": "1", "B": "3"}},
    {"env": {}},
    {"workdir": "/tmp"},
    {"workdir": ""},
    {"extra": "manifest-digest"},
])
def test_hash_changes_with_content(changed):
    assert _hash(**changed) != _hash()


def test_hash_ignores_options_and_metadata():
    variant = parse_line("RUN --skip-cache --run-once --timeout 5 echo hi", source="f", line=3)
    assert _hash(variant) == _hash()


@pytest.mark.parametrize(("a", "b"), [
    ("COPY a b", "ADD a b"),
    ("COPY a b", "COPY a c"),
    ("COPY a b c", "COPY 'a b' c"),
    ("COPY a b", "COPY --chmod 644 a b"),
    ("COPY --chmod 644 a b", "COPY --chmod 0644 a b"),
    ("COPY a b", "COPY --chown u a b"),
    ("ARG A=1", "ARG A=2"),
    ("ARG A=1", "ENV A=1"),
    ("ARG A=1", "ARG B=1"),
    ("WORKDIR /a", "WORKDIR /b"),
    ("RUN x", "WORKDIR x"),
])
def test_hash_distinguishes_fields(a, b):
    assert _hash(parse_line(a)) != _hash(parse_line(b))


def test_hash_field_boundaries_cannot_collide():
    # naive concatenation would make these equal; canonical JSON keeps them apart
    assert _hash(env={"A": "1", "B": "2"}) != _hash(env={"A": "1,B", "": "2"})
    assert _hash(workdir="/a", extra="b") != _hash(workdir="/ab", extra="")


_TEXTS = st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(_TEXTS.filter(str.strip), st.dictionaries(_TEXTS, _TEXTS, max_size=4), _TEXTS, _TEXTS)
def test_property_hash_depends_only_on_content(command, env, workdir, extra):
    one = Instruction(verb="RUN", command=command)
    two = Instruction(verb="RUN", command=command, options=Options(timeout=1.0, skip_cache=True),
                      line=5, source="x", text="anything")
    assert job_hash(one, env=env, workdir=workdir, extra=extra) == job_hash(
        two, env=dict(reversed(list(env.items()))), workdir=workdir, extra=extra)
    assert job_hash(one, env=env, workdir=workdir, extra=extra) != job_hash(
        one, env=env, workdir=workdir, extra=extra + "x")


# ------------------------------------------------------------- values from a node are data
def test_node_values_are_shell_quoted_in_run_and_literal_elsewhere():
    node = {"V": "1.0; touch M #"}
    run = resolve(parse_line("RUN echo ${V} {{ V }} ${NAME}"), ARGS, node)
    assert run.command == "echo '1.0; touch M #' '1.0; touch M #' world"
    assert resolve(parse_line("RUN echo \"x${V}\""), {}, node).command == \
        "echo \"x\"'1.0; touch M #'\"\""
    assert resolve(parse_line("RUN echo 'x${V}'"), {}, node).command == \
        "echo 'x''1.0; touch M #'''"
    exec_form = resolve(parse_line('RUN ["echo", "${V}", "a{{V}}"]'), {}, node)
    assert exec_form.argv == ("echo", "1.0; touch M #", "a1.0; touch M #")
    copy = resolve(parse_line("COPY a /d/${V}/"), {}, {"V": "x y'$(z)"})
    assert copy.dest == "/d/x y'$(z)/"
    assert resolve(parse_line("ARG A=${V}"), {}, node).value == "1.0; touch M #"


def test_node_values_are_never_expanded_again():
    node = {"V": "${NAME} {{ NAME }}"}
    assert substitute("a ${V}", ARGS, node) == "a ${NAME} {{ NAME }}"
    assert resolve(parse_line("RUN echo ${V}"), ARGS, node).command == \
        "echo '${NAME} {{ NAME }}'"


def test_a_node_value_wins_over_an_operator_value_of_the_same_name():
    assert substitute("${NAME}", ARGS, {"NAME": "n"}) == "n"


@pytest.mark.parametrize("command", [
    "echo `x ${V}`", "cat <<E\n${V}\nE", "echo \"$(echo ${V})\"", "echo \\${V}",
    "echo \"\\${V}\"", "echo $'a' ${V}",
])
def test_node_value_where_quoting_is_unsafe_is_an_error(command):
    with pytest.raises(DSLError, match="cannot be quoted safely") as err:
        resolve(parse_line(command.join(("RUN ", "")), line=3), {}, {"V": "v"})
    assert err.value.line == 3
    # the operator's own values there are fine: they are theirs
    assert resolve(parse_line("RUN " + command), {"V": "v"}).command


@pytest.mark.parametrize("line", [
    "RUN echo ${V}", "RUN echo hi", 'RUN ["echo", "hi"]', "COPY a b", "ARG A=1",
])
def test_resolution_without_node_values_is_unchanged(line):
    instr = parse_line(line)
    assert resolve(instr, {"V": "x; y"}, {}) == resolve(instr, {"V": "x; y"})


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=" ;&|$(){}`'\"\\\n\t#*?~<>!x", min_size=0, max_size=12),
       st.sampled_from(["printf '%s' ${V}", "printf '%s' \"${V}\"", "printf '%s' '${V}'",
                        "printf '%s' a${V}b", "printf '%s' \"a'b${V}\""]))
def test_property_sh_prints_exactly_the_node_value(value, command):
    import subprocess

    resolved = resolve(parse_line("RUN " + command), {}, {"V": value}).command
    out = subprocess.run(["/bin/sh", "-c", resolved], capture_output=True, timeout=10)
    prefix, suffix = {"printf '%s' a${V}b": ("a", "b"), "printf '%s' \"a'b${V}\"": ("a'b", "")}.get(
        command, ("", ""))
    assert out.returncode == 0 and out.stdout.decode() == prefix + value + suffix
