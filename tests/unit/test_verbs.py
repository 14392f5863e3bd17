"""Tests for director.jobs.verbs: the table is consistent, and a verb is one entry in it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from director.errors import DSLError, ProtocolError
from director.jobs import dsl, steps, verbs
from director.jobs.dsl import Instruction, parse_line
from director.jobs.executor import Outcome, Pending, begin
from director.jobs.files import parse_job_text, parse_yaml
from director.jobs.nodestate import JobCache, NodeState
from director.jobs.plan import job_hash, resolve
from director.jobs.rules import Invalid, check_name

# One line per verb setting every field it has (and so every option).
SAMPLES = {
    "RUN": "RUN --timeout 5 --stdout-arg OUT --stderr-arg ERR echo ${X} 'a  b'",
    "COPY": "COPY --chmod 0644 --chown u:g --blueprint a 'b c' ${D}/",
    "ADD": "ADD --run-once --chmod 755 --chown 0 --blueprint src/ /dst",
    "ARG": "ARG VERSION=1.${X}",
    "ENV": "ENV PATH /x:$PATH",
    "WORKDIR": "WORKDIR --skip-cache --chmod 0750 --chown u:g /srv/${X}",
    "SERVICE": "SERVICE --restarted --daemon-reload --enable nginx.service ${X}.service",
    "ECHO": "ECHO hello ${X}",
    "CACHEFILE": "CACHEFILE /etc/${X}.yaml",
    "CACHEEVICT": "CACHEEVICT all",
    "GET": "GET --timeout 9 /var/log/${X}.log 'a b' /srv/fetched",
    "QUERY": "QUERY address",
}
# Where ${NAME} is replaced (CONTRACT: "in later lines"); names, modes and verbs never.
SUBSTITUTED = {"RUN": {"command", "argv"}, "COPY": {"sources", "dest", "chown"},
               "ADD": {"sources", "dest", "chown"}, "ARG": {"value"}, "ENV": {"value"},
               "WORKDIR": {"path", "chown"}, "SERVICE": {"argv"}, "ECHO": {"value"},
               "CACHEFILE": {"path"}, "CACHEEVICT": set(), "GET": {"sources"}, "QUERY": set()}
# The shell-form RUN sample leaves argv empty; EXEC_SAMPLE sets it instead of command.
UNSET = {"RUN": {"argv"}}
EXEC_SAMPLE = 'RUN --stdout-arg OUT --stderr-arg ERR ["printf", "%s\\n", "${X}", "a  b"]'
_COMMON_FIELDS = {"verb", "options", "line", "source", "text", "vars"}
_INSTRUCTION_FIELDS = {f.name for f in dataclasses.fields(Instruction)}


def test_samples_cover_every_verb():
    assert set(SAMPLES) == set(verbs.TABLE) == set(dsl.VERBS)
    assert verbs.names() == dsl.VERBS == ("RUN", "COPY", "ADD", "ARG", "ENV", "WORKDIR",
                                          "SERVICE", "ECHO", "CACHEFILE", "CACHEEVICT",
                                          "GET", "QUERY")


def test_payload_fields_are_the_instruction_fields_that_vary_by_verb():
    assert set(verbs.PAYLOAD_FIELDS) == _INSTRUCTION_FIELDS - _COMMON_FIELDS


@pytest.mark.parametrize("name", list(verbs.TABLE))
def test_entry_is_complete(name):
    v = verbs.spec(name)
    assert v.name == name and name.isascii() and name.isupper()
    assert v.fields and set(v.fields) <= set(verbs.PAYLOAD_FIELDS)
    assert v.hash_fields and set(v.hash_fields) <= set(v.fields) <= _INSTRUCTION_FIELDS
    assert set(v.substituted) <= set(v.fields)
    assert set(v.foreign) == set(verbs.PAYLOAD_FIELDS) - set(v.fields)
    common = {o.name for o in verbs.COMMON_OPTIONS}
    for opt in v.options:
        assert opt.field in v.fields and opt.name not in common
        if opt.check is None:  # a bare flag: collected by name into 'flags'
            assert opt.field == "flags" and opt.name.startswith("--")
        else:
            assert opt.check(opt.example) == opt.example
    for fn in (v.parse, v.check, v.describe, v.execute):
        assert callable(fn)


def test_transfers_exactly_for_copy_and_add():
    assert {n for n in verbs.names() if verbs.spec(n).transfers} == {"COPY", "ADD"}


def test_spec_of_an_unknown_verb_is_a_key_error():
    with pytest.raises(KeyError):
        verbs.spec("FROM")


@pytest.mark.parametrize("name", list(SAMPLES))
def test_round_trip_per_verb(name):
    instr = parse_line(SAMPLES[name], source="f", line=2)
    assert instr.verb == name
    data = instr.to_dict()
    assert Instruction.from_dict(data) == instr
    assert Instruction.from_dict(json.loads(json.dumps(data))) == instr
    # only the verb's own fields differ from the defaults
    blank = Instruction(verb=name).to_dict()
    assert {k for k in verbs.PAYLOAD_FIELDS if data.get(k, []) != blank.get(k, [])} == \
        set(verbs.spec(name).fields) - UNSET.get(name, set())
    # describe() prints a line that parses back to the same instruction
    again = parse_line(instr.describe(), source="f", line=2)
    assert dataclasses.replace(again, text=instr.text) == instr


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_foreign_field_is_refused_on_the_wire(name):
    data = parse_line(SAMPLES[name]).to_dict()
    for key in verbs.spec(name).foreign:
        bad = {**data, key: ["x"] if key in ("sources", "argv", "flags") else "X"}
        with pytest.raises(ProtocolError, match=f"field '{key}' is not allowed for {name}"):
            Instruction.from_dict(bad)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_hash_follows_exactly_the_hash_fields(name):
    instr = parse_line(SAMPLES[name])
    base = job_hash(instr, env={}, workdir="/w")
    assert verbs.spec(name).hash_fields == verbs.spec(name).fields  # all of them decide the job
    for key in verbs.spec(name).fields:
        value = getattr(instr, key)
        changed = ("zz",) if isinstance(value, tuple) else "Zz1"
        other = job_hash(dataclasses.replace(instr, **{key: changed}), env={}, workdir="/w")
        assert (other != base) == (key in verbs.spec(name).hash_fields)
    assert job_hash(dataclasses.replace(instr, line=99, text="other"), env={}, workdir="/w") == base


@pytest.mark.parametrize("name", list(SAMPLES))
def test_resolve_substitutes_exactly_the_declared_fields(name):
    instr = parse_line(SAMPLES[name])
    marks = {"chown": "${X}:g", "chmod": None, "stdout_arg": None, "stderr_arg": None,
             "name": None, "flags": None}  # None: keep
    marked = dataclasses.replace(instr, **{
        key: ("${X}",) if isinstance(getattr(instr, key), tuple) else marks.get(key, "${X}")
        for key in verbs.spec(name).fields if marks.get(key, "") is not None
    })
    res = resolve(marked, {"X": "v"})
    assert set(verbs.spec(name).substituted) == SUBSTITUTED[name]
    for key in verbs.spec(name).fields:
        before, after = getattr(marked, key), getattr(res, key)
        if key in verbs.spec(name).substituted:
            assert "${X}" in str(before) and "${X}" not in str(after) and "v" in str(after)
        else:
            assert after == before


# ----------------------------------------------------- a new verb is one entry, nothing else

def _shout(res, node: steps.Node) -> Outcome:
    h = node.job_hash()
    return Outcome("success", rc=0, stdout=f"{res.name}: {res.value.upper()}\n{h}")


def _parse_shout(verb: str, rest: str) -> dict:
    if not rest:
        raise Invalid(f"{verb} needs text: e.g. {verb} hello")
    return {"value": rest}


def _check_shout(verb: str, d) -> None:
    if not d["value"]:
        raise Invalid(f"{verb} needs a non-empty 'value'")


SHOUT = verbs.Verb(
    "SHOUT", _parse_shout, _check_shout, lambda i: i.value, _shout,
    fields=("name", "value"), hash_fields=("value",), substituted=("value",),
    options=(verbs.Option("--label", "name", lambda v: check_name("--label", v), "NAME"),),
)


@pytest.fixture
def shout():
    assert "SHOUT" not in verbs.TABLE
    verbs.TABLE["SHOUT"] = SHOUT
    try:
        yield SHOUT
    finally:
        del verbs.TABLE["SHOUT"]


@pytest.fixture
def node(tmp_path: Path):
    state = NodeState(tmp_path)
    cache = JobCache(tmp_path / "cache.db")
    yield state, cache
    cache.close()


def test_a_registered_verb_parses_decodes_describes_and_hashes(shout):
    instr = parse_line("shout --label greet hello ${WHO}", source="f", line=1)
    assert (instr.verb, instr.name, instr.value) == ("SHOUT", "greet", "hello ${WHO}")
    assert "SHOUT" in dsl.VERBS
    assert instr.describe() == "SHOUT --label greet hello ${WHO}"
    assert Instruction.from_dict(json.loads(json.dumps(instr.to_dict()))) == instr
    with pytest.raises(ProtocolError, match="field 'command' is not allowed for SHOUT"):
        Instruction.from_dict({**instr.to_dict(), "command": "x"})
    with pytest.raises(ProtocolError, match="SHOUT needs a non-empty 'value'"):
        Instruction.from_dict({**instr.to_dict(), "value": ""})
    with pytest.raises(DSLError, match="SHOUT needs text"):
        parse_line("SHOUT --label greet")
    with pytest.raises(DSLError, match="invalid name '1x' for --label"):
        parse_line("SHOUT --label 1x hi")
    with pytest.raises(DSLError, match="--label is not valid for RUN: it only applies to SHOUT"):
        parse_line("RUN --label x true")
    h = job_hash(instr, env={}, workdir="/w")
    assert h == job_hash(dataclasses.replace(instr, name="other"), env={}, workdir="/w")
    assert h != job_hash(dataclasses.replace(instr, value="bye"), env={}, workdir="/w")
    assert resolve(instr, {"WHO": "you"}).value == "hello you"
    yaml_steps = parse_yaml("- jobs:\n  - SHOUT: hi there\n", "o.yaml")
    assert yaml_steps[0].jobs[0].value == "hi there"
    assert parse_job_text("SHOUT a\nRUN true")[0].jobs[0].verb == "SHOUT"


def test_a_registered_verb_runs_on_the_node(shout, node):
    state, cache = node
    assert begin(parse_line("ARG WHO=world"), state, cache).status == "success"
    out = begin(Instruction.from_dict(parse_line("SHOUT --label g hi ${WHO}").to_dict()),
                state, cache)
    assert isinstance(out, Outcome) and out.status == "success"
    first, digest = out.stdout.split("\n")
    assert first == "g: HI WORLD" and len(digest) == 64
    assert isinstance(begin(parse_line("RUN true"), state, cache), Pending)  # others untouched


def test_an_unregistered_verb_is_unknown_everywhere():
    with pytest.raises(DSLError, match="unknown verb 'SHOUT': expected one of RUN, COPY, ADD"):
        parse_line("SHOUT hi")
    with pytest.raises(ProtocolError, match="unknown verb 'SHOUT'"):
        Instruction.from_dict({"verb": "SHOUT", "value": "hi"})
    assert "SHOUT" not in dsl.VERBS


def test_run_exec_form_round_trips_describes_and_hashes():
    instr = parse_line(EXEC_SAMPLE, source="f", line=2)
    assert (instr.command, instr.argv, instr.stdout_arg) == ("", ("printf", "%s\n", "${X}", "a  b"),
                                                             "OUT")
    data = instr.to_dict()
    assert data["argv"] == list(instr.argv) and data["command"] == ""
    assert Instruction.from_dict(json.loads(json.dumps(data))) == instr
    again = parse_line(instr.describe(), source="f", line=2)
    assert dataclasses.replace(again, text=instr.text) == instr
    # the shell form's wire form and hash are what they were before argv existed
    shell = parse_line("RUN echo hi")
    assert "argv" not in shell.to_dict()
    assert job_hash(instr, env={}, workdir="/w") != job_hash(
        dataclasses.replace(instr, argv=("printf", "x")), env={}, workdir="/w")


@pytest.mark.parametrize("line", [
    'RUN []', 'RUN [""]', 'RUN ["a", 1]', 'RUN ["a", null]', 'RUN [["a"]]', 'RUN ["a", NaN]',
])
def test_run_exec_form_refuses_bad_arrays(line):
    if "NaN" in line:  # not JSON: it is a shell command that happens to start with [
        assert parse_line(line).command == line[4:]
        return
    with pytest.raises(DSLError, match="exec form"):
        parse_line(line)


def test_run_text_that_is_not_a_json_array_is_a_shell_command():
    assert parse_line('RUN [ -f x ] && echo yes').command == "[ -f x ] && echo yes"
    assert parse_line('RUN ["a" ] || true').command == '["a" ] || true'
    assert parse_line('RUN --timeout 3 ["a"]').argv == ("a",)


@pytest.mark.parametrize("bad", [
    {"argv": ["x"], "command": "y"}, {"argv": [1]}, {"argv": "x"}, {"argv": [""]},
    {"argv": ["a\x00"]}, {"argv": ["x" * (dsl.MAX_INSTRUCTION_SIZE + 1)]},
])
def test_run_exec_form_wire_rules(bad):
    data = {**parse_line('RUN ["a"]').to_dict(), **bad}
    if "command" not in bad:
        data["command"] = ""
    with pytest.raises(ProtocolError):
        Instruction.from_dict(data)


def test_argv_is_foreign_to_other_verbs():
    data = parse_line("ENV A=1").to_dict()
    with pytest.raises(ProtocolError, match="field 'argv' is not allowed for ENV"):
        Instruction.from_dict({**data, "argv": ["x"]})
