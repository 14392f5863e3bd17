"""Tests for director.jobs.dsl: parsing verb lines and the strict wire decoding."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.errors import DSLError, ProtocolError
from director.jobs import verbs
from director.jobs.dsl import (
    MAX_INSTRUCTION_SIZE,
    VERBS,
    Instruction,
    Options,
    parse_line,
    validate_chown,
)

# ---------------------------------------------------------------------------- valid lines

VALID = [
    ("RUN echo hi", {"verb": "RUN", "command": "echo hi"}),
    ("run echo hi", {"verb": "RUN", "command": "echo hi"}),
    ("  Run   echo  'a  b'  \"c\"  ", {"verb": "RUN", "command": "echo  'a  b'  \"c\""}),
    ("RUN echo # not a comment", {"command": "echo # not a comment"}),
    ("RUN --timeout 30 sleep 1", {"command": "sleep 1", "options": Options(timeout=30.0)}),
    ("RUN --timeout=1.5 true", {"options": Options(timeout=1.5)}),
    ("RUN --timeout 86400 true", {"options": Options(timeout=86400.0)}),
    ("RUN --skip-cache --run-once date", {"options": Options(skip_cache=True, run_once=True)}),
    ("RUN --stdout-arg HOST hostname", {"stdout_arg": "HOST", "command": "hostname"}),
    ("RUN --stdout-arg=_x1 hostname", {"stdout_arg": "_x1"}),
    ("RUN -- --version", {"command": "--version"}),
    ("RUN -x", {"command": "-x"}),
    ("RUN echo --skip-cache", {"command": "echo --skip-cache", "options": Options()}),
    ("RUN set -e\necho two", {"command": "set -e\necho two"}),
    ("COPY a b", {"verb": "COPY", "sources": ("a",), "dest": "b"}),
    ("copy a b c /dst/", {"sources": ("a", "b", "c"), "dest": "/dst/"}),
    ("COPY 'a b' \"c d\" /x", {"sources": ("a b", "c d"), "dest": "/x"}),
    ("COPY --chown=user:group a b", {"chown": "user:group"}),
    ("COPY --chown 0:0 --chmod 0755 a b", {"chown": "0:0", "chmod": "0755"}),
    ("ADD --chmod=644 --chown=www-data a b", {"verb": "ADD", "chmod": "644", "chown": "www-data"}),
    ("ADD --chmod 7777 a b", {"chmod": "7777"}),
    ("ADD --chmod 0 a b", {"chmod": "0"}),
    ("COPY --chown='user:group' a b", {"chown": "user:group"}),
    ("COPY --chown {{ U }}:${G} a b", {"chown": "{{ U }}:${G}"}),
    ("COPY -- --weird b", {"sources": ("--weird",), "dest": "b"}),
    ("COPY src /srv/{{ app }}/", {"dest": "/srv/{{app}}/"}),
    ("ARG KEY=VALUE", {"verb": "ARG", "name": "KEY", "value": "VALUE"}),
    ("ARG KEY VALUE", {"name": "KEY", "value": "VALUE"}),
    ("ARG KEY a b  c", {"name": "KEY", "value": "a b  c"}),
    ("ARG KEY a=b", {"name": "KEY", "value": "a=b"}),
    ("ARG KEY=a=b", {"name": "KEY", "value": "a=b"}),
    ("ARG EMPTY=", {"name": "EMPTY", "value": ""}),
    ("ENV GREETING=\"hello world\"", {"verb": "ENV", "name": "GREETING", "value": "hello world"}),
    ("ENV X 'single'", {"value": "single"}),
    ("ENV X \"mismatch'", {"value": "\"mismatch'"}),
    ("ENV _a1 ${OTHER}", {"name": "_a1", "value": "${OTHER}"}),
    ("ENV --run-once X=1", {"options": Options(run_once=True), "name": "X"}),
    ("WORKDIR /srv/app", {"verb": "WORKDIR", "path": "/srv/app"}),
    ("WORKDIR '/srv/my app'", {"path": "/srv/my app"}),
    ("WORKDIR --timeout 5 /x", {"path": "/x", "options": Options(timeout=5.0)}),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parse_valid(text, expected):
    instr = parse_line(text, source="Directorfile", line=7)
    for key, value in expected.items():
        assert getattr(instr, key) == value, key
    assert instr.verb in VERBS
    assert (instr.line, instr.source, instr.text) == (7, "Directorfile", text)


def test_fields_of_other_verbs_stay_default():
    instr = parse_line("RUN echo hi")
    assert instr == Instruction(verb="RUN", command="echo hi", text="RUN echo hi")


# -------------------------------------------------------------------------- invalid lines

INVALID = [
    ("", "empty job line"),
    ("   \t ", "empty job line"),
    ("FROM fedora", "unknown verb 'FROM': expected one of RUN, COPY, ADD, ARG, ENV, WORKDIR"),
    ("RUNN x", "unknown verb 'RUNN'"),
    ("WORKDır /x", "unknown verb"),
    ("RUN", "RUN needs a command"),
    ("RUN   ", "RUN needs a command"),
    ("RUN --skip-cache", "RUN needs a command"),
    ("RUN --", "RUN needs a command"),
    ("RUN --bogus x", "unknown option '--bogus' for RUN"),
    ("RUN --chmod 644 x",
     "--chmod is not valid for RUN: it only applies to COPY, ADD and WORKDIR"),
    ("RUN --chown u x", "--chown is not valid for RUN"),
    ("COPY --stdout-arg X a b", "--stdout-arg is not valid for COPY: it only applies to RUN"),
    ("ARG --chmod 644 A=1", "--chmod is not valid for ARG"),
    ("RUN --timeout", "--timeout needs a value"),
    ("RUN --timeout= x", "--timeout needs a value"),
    ("RUN --timeout 0 x", "--timeout must be a positive number"),
    ("RUN --timeout -1 x", "--timeout must be a positive number"),
    ("RUN --timeout 86401 x", "up to 86400"),
    ("RUN --timeout abc x", "--timeout must be a positive number"),
    ("RUN --timeout nan x", "--timeout must be"),
    ("RUN --timeout inf x", "--timeout must be"),
    ("RUN --timeout 1_0 x", "--timeout must be"),
    ("RUN --timeout 1 --timeout 2 x", "given twice"),
    ("RUN --skip-cache=yes x", "--skip-cache takes no value"),
    ("RUN --stdout-arg 1X x", "invalid name '1X' for --stdout-arg"),
    ("RUN --stdout-arg", "--stdout-arg needs a value"),
    ("RUN echo \x00", "NUL"),
    ("COPY", "COPY needs at least one source and a destination"),
    ("COPY onlyone", "COPY needs at least one source and a destination"),
    ("ADD --chown u a", "ADD needs at least one source"),
    ("COPY 'a b", "check the quotes"),
    ("COPY '' b", "empty path"),
    ("COPY --chmod 888 a b", "--chmod must be an octal mode"),
    ("COPY --chmod 10000 a b", "at most 7777"),
    ("COPY --chmod u+x a b", "--chmod must be an octal mode"),
    ("COPY --chown a:b:c x y", "--chown must be USER or USER:GROUP"),
    ("COPY --chown :group x y", "--chown must be USER"),
    ("COPY --chown user: x y", "--chown must be USER"),
    ("COPY --chown 99999999999 x y", "--chown must be USER"),
    ("COPY --chown 'a b' x y", "--chown must be USER"),
    ("ARG", "ARG needs NAME=VALUE or NAME VALUE"),
    ("ARG =x", "ARG needs NAME=VALUE"),
    ("ARG KEY", "ARG KEY needs a value"),
    ("ENV 1A=2", "invalid name '1A' for ENV"),
    ("ENV A-B=2", "invalid name 'A-B'"),
    ("WORKDIR", "WORKDIR takes exactly one path, got 0"),
    ("WORKDIR a b", "WORKDIR takes exactly one path, got 2"),
    ("WORKDIR ''", "WORKDIR got an empty path"),
    ("RUN " + "x" * (256 * 1024), "characters long"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_parse_invalid(text, message):
    with pytest.raises(DSLError) as info:
        parse_line(text, source="Directorfile", line=3)
    assert message in info.value.message
    assert (info.value.source, info.value.line) == ("Directorfile", 3)
    assert str(info.value).startswith("Directorfile:3: ")


def test_parse_rejects_non_text():
    with pytest.raises(DSLError, match="must be text"):
        parse_line(b"RUN x")  # type: ignore[arg-type]


def test_error_without_location_has_no_prefix():
    with pytest.raises(DSLError) as info:
        parse_line("NOPE")
    assert str(info.value).startswith("unknown verb")


def test_unknown_option_message_lists_what_is_accepted():
    with pytest.raises(DSLError) as info:
        parse_line("COPY --mode 644 a b")
    assert "--chmod" in info.value.message and "--chown" in info.value.message


# ------------------------------------------------------------------------------ validate_chown

@pytest.mark.parametrize("value", ["root", "0", "1000:1000", "www-data:www-data", "a.b",
                                   "machine$", "_x:_y", "4294967294"])
def test_validate_chown_accepts(value):
    assert validate_chown(value, templates=False) == value


@pytest.mark.parametrize("value", ["", ":", "a:", ":b", "-x", "a b", "4294967295", "${U}",
                                   "a:b:c", "é"])
def test_validate_chown_rejects(value):
    with pytest.raises(DSLError):
        validate_chown(value, templates=False)


def test_validate_chown_templates_allowed_only_when_asked():
    assert validate_chown("${U}:{{ G }}") == "${U}:{{ G }}"
    with pytest.raises(DSLError):
        validate_chown("${U}:{{ G }}", templates=False)


# ----------------------------------------------------------------------------------- describe

@pytest.mark.parametrize(("text", "expected"), [
    ("RUN echo hi", "RUN echo hi"),
    ("run --skip-cache --timeout 30 date", "RUN --timeout 30 --skip-cache date"),
    ("RUN --stdout-arg X --run-once hostname", "RUN --run-once --stdout-arg X hostname"),
    ("COPY --chown=u:g --chmod 644 a 'b c' /d/", "COPY --chmod 644 --chown u:g a 'b c' /d/"),
    ("ARG K V", "ARG K=V"),
    ("ENV K=\"a b\"", "ENV K=a b"),
    ("WORKDIR /srv", "WORKDIR /srv"),
    ("RUN a\nb", "RUN a\\nb"),
])
def test_describe(text, expected):
    assert parse_line(text).describe() == expected


def test_describe_truncates():
    out = parse_line("RUN " + "x" * 100).describe(max_len=20)
    assert len(out) == 20 and out.endswith("...")


# ----------------------------------------------------------------------------- wire format

def _assert_json_safe(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            _assert_json_safe(item)
    elif isinstance(value, list):
        for item in value:
            _assert_json_safe(item)
    else:
        assert value is None or type(value) in (str, float, bool, int)


@pytest.mark.parametrize("text", [t for t, _ in VALID])
def test_to_dict_round_trip_through_json(text):
    instr = parse_line(text, source="f.yaml", line=2)
    data = instr.to_dict()
    _assert_json_safe(data)
    assert Instruction.from_dict(json.loads(json.dumps(data))) == instr


def test_to_dict_shape():
    data = parse_line("RUN --timeout 5 true").to_dict()
    assert data["verb"] == "RUN" and data["timeout"] == 5.0 and type(data["timeout"]) is float
    assert data["sources"] == [] and data["line"] is None


def test_from_dict_fills_omitted_fields_with_defaults():
    assert Instruction.from_dict({"verb": "RUN", "command": "x", "timeout": 5}) == Instruction(
        verb="RUN", command="x", options=Options(timeout=5.0))


def _run(**changes):
    data = Instruction(verb="RUN", command="echo").to_dict()
    data.update(changes)
    return data


def _copy(**changes):
    data = Instruction(verb="COPY", sources=("a",), dest="b").to_dict()
    data.update(changes)
    return data


MALFORMED = [
    (None, "expected an object"),
    ([], "expected an object"),
    ("RUN x", "expected an object"),
    ({}, "missing field 'verb'"),
    (_run(extra=1), "unknown field 'extra'"),
    ({"verb": "RUN", 1: 2, "command": "x"}, "unknown field"),
    (_run(verb="run"), "unknown verb"),
    (_run(verb="FROM"), "unknown verb"),
    (_run(verb=None), "'verb' must be a string"),
    (_run(command=1), "'command' must be a string"),
    (_run(command=""), "RUN needs a non-empty 'command'"),
    (_run(command="  "), "RUN needs a non-empty 'command'"),
    (_run(command="a\x00b"), "NUL"),
    (_run(timeout="600"), "'timeout' must be a number"),
    (_run(timeout=True), "'timeout' must be a number"),
    (_run(timeout=0), "'timeout' must be in"),
    (_run(timeout=-5.0), "'timeout' must be in"),
    (_run(timeout=86400.5), "'timeout' must be in"),
    (_run(timeout=float("nan")), "'timeout' must be in"),
    (_run(timeout=float("inf")), "'timeout' must be in"),
    (_run(timeout=10**400), "'timeout' must be in"),
    (_run(skip_cache=1), "'skip_cache' must be a boolean"),
    (_run(run_once="false"), "'run_once' must be a boolean"),
    (_run(stdout_arg="1x"), "invalid name"),
    (_run(stdout_arg=3), "'stdout_arg' must be a string"),
    (_run(line=True), "'line'"),
    (_run(line=-1), "'line'"),
    (_run(line="3"), "'line'"),
    (_run(source=5), "'source' must be a string"),
    (_run(text=None), "'text' must be a string"),
    (_run(sources=["a"]), "field 'sources' is not allowed for RUN"),
    (_run(chmod="644"), "field 'chmod' is not allowed for RUN"),
    (_run(name="X"), "field 'name' is not allowed for RUN"),
    (_copy(command="x"), "field 'command' is not allowed for COPY"),
    (_copy(stdout_arg="X"), "field 'stdout_arg' is not allowed for COPY"),
    (_copy(sources=[]), "needs non-empty 'sources' and 'dest'"),
    (_copy(sources=[""]), "needs non-empty"),
    (_copy(dest=""), "needs non-empty"),
    (_copy(sources="a"), "'sources' must be a list of strings"),
    (_copy(sources=[1]), "'sources' must be a list of strings"),
    (_copy(sources={"a": 1}), "'sources' must be a list of strings"),
    (_copy(chmod="999"), "--chmod"),
    (_copy(chmod=644), "'chmod' must be a string"),
    (_copy(chown="a b"), "--chown"),
    ({"verb": "ARG", "name": "1X", "value": "v"}, "invalid name"),
    ({"verb": "ENV", "name": "", "value": "v"}, "invalid name"),
    ({"verb": "WORKDIR", "path": ""}, "WORKDIR needs a non-empty 'path'"),
    (_run(command="x" * (MAX_INSTRUCTION_SIZE + 1)), "larger than"),
    (_run(command="x" * 600_000, text="y" * 600_000), "larger than"),
    (_copy(sources=["s"] * (MAX_INSTRUCTION_SIZE // 2 + 1)), "larger than"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_from_dict_rejects(data, message):
    with pytest.raises(ProtocolError) as info:
        Instruction.from_dict(data)
    assert message in str(info.value)
    assert len(str(info.value)) < 300  # never echoes a hostile payload back


# --------------------------------------------------------------------------------- properties

_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=30)
_NONEMPTY = _TEXT.filter(lambda s: s != "")
_OPTIONS = st.builds(
    Options,
    timeout=st.floats(min_value=0.001, max_value=86400.0, allow_nan=False),
    skip_cache=st.booleans(), run_once=st.booleans(),
)
_CHMOD = st.integers(0, 0o7777).map(lambda m: format(m, "o")) | st.just("0755")
_CHOWN = st.sampled_from(["root", "0:0", "user:group", "${U}:{{ G }}", "www-data"])
_UNITS = st.sampled_from(["nginx.service", "a@1.service", "sys-*.mount", "${U}.service"])
_SERVICE_FLAG_SETS = [(), ("--restarted",), ("--daemon-reload", "--enable", "--stopped"),
                      ("--mask",), ("--reloaded", "--unmask")]
_META = {"line": st.none() | st.integers(1, 10**6), "source": st.none() | _TEXT, "text": _TEXT}


@st.composite
def instructions(draw):
    verb = draw(st.sampled_from(VERBS))
    fields = {key: draw(strategy) for key, strategy in _META.items()}
    fields["options"] = draw(_OPTIONS)
    if verb == "RUN":
        fields["command"] = draw(_NONEMPTY.filter(lambda s: s.strip() != ""))
        fields["stdout_arg"] = draw(st.none() | _NAMES)
    elif verb in ("COPY", "ADD"):
        fields["sources"] = tuple(draw(st.lists(_NONEMPTY, min_size=1, max_size=4)))
        fields["dest"] = draw(_NONEMPTY)
        fields["chmod"] = draw(st.none() | _CHMOD)
        fields["chown"] = draw(st.none() | _CHOWN)
    elif verb in ("ARG", "ENV"):
        fields["name"] = draw(_NAMES)
        fields["value"] = draw(_TEXT)
    elif verb == "GET":
        fields["sources"] = tuple(draw(st.lists(_NONEMPTY, min_size=1, max_size=4)))
        fields["dest"] = draw(_NONEMPTY)
    elif verb == "SERVICE":
        fields["argv"] = tuple(draw(st.lists(_UNITS, min_size=1, max_size=3)))
        chosen = draw(st.sampled_from(_SERVICE_FLAG_SETS))
        fields["flags"] = tuple(f for f in verbs.SERVICE_FLAGS if f in chosen)
    elif verb == "ECHO":
        fields["value"] = draw(_TEXT)
    elif verb in ("CACHEEVICT", "QUERY"):
        fields["name"] = draw(_NAMES)
    else:
        fields["path"] = draw(_NONEMPTY)
        if verb == "WORKDIR":
            fields["chmod"] = draw(st.none() | _CHMOD)
            fields["chown"] = draw(st.none() | _CHOWN)
    return Instruction(verb=verb, **fields)


@settings(max_examples=200, deadline=None)
@given(instructions())
def test_property_round_trip(instr):
    assert Instruction.from_dict(instr.to_dict()) == instr
    assert Instruction.from_dict(json.loads(json.dumps(instr.to_dict()))) == instr


_LINE_PIECES = st.sampled_from([
    "RUN", "run", "COPY", "ADD", "ARG", "ENV", "WORKDIR", "FROM", "--timeout", "--timeout=5",
    "5", "0", "--skip-cache", "--run-once", "--stdout-arg", "X", "--chmod", "644", "--chown",
    "u:g", "--", "--x", "'", "\"", "a b", "=", "K=V", "{{", "}}", "${A}", "\\", "#", "\n",
    "\x00", " ", "\t", "é",
])


@settings(max_examples=200, deadline=None)
@given(st.lists(_LINE_PIECES, max_size=10).map(" ".join) | st.text(max_size=60))
def test_property_parse_line_only_raises_dsl_error(text):
    try:
        instr = parse_line(text, source="f", line=1)
    except DSLError as exc:
        assert exc.message and exc.line == 1
    else:
        assert instr.verb in VERBS
        # whatever parse_line accepts must also pass the strict wire decoder unchanged
        assert Instruction.from_dict(instr.to_dict()) == instr


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_KEYS = sorted(Instruction(verb="RUN").to_dict())


@st.composite
def mutated_dicts(draw):
    data = draw(instructions()).to_dict()
    for key in draw(st.lists(st.sampled_from(_KEYS + ["bogus"]), min_size=1, max_size=3)):
        data[key] = draw(_JSON)
    return data


@settings(max_examples=200, deadline=None)
@given(_JSON | mutated_dicts())
def test_property_from_dict_only_raises_protocol_error(data):
    try:
        instr = Instruction.from_dict(data)
    except ProtocolError:
        return
    assert isinstance(instr, Instruction)
    assert Instruction.from_dict(instr.to_dict()) == instr
