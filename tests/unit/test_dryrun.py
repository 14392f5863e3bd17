"""The pure parts of dry runs (server/dryrun.py): file changes against the manifest a node
last applied, names set on the node at run time, the bounded record of copies; and the
content hash ``job --json`` and the dry run share (plan.definition_hash)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from director.jobs.files import parse_job_text
from director.jobs.plan import definition_hash, job_hash, stored_hash
from director.server.dryrun import CopyRecords, file_changes, run_time_names
from director.transfer.manifest import FileEntry, Manifest, digest_of

CHUNK = 4096


def _entry(rel: str, data: bytes, mode: int = 0o644) -> FileEntry:
    chunks = tuple(digest_of(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK))
    return FileEntry(rel, len(data), mode, digest_of(data), chunks)


def _manifest(files: dict[str, bytes], dest: str = "/srv/app/", **modes: int) -> Manifest:
    return Manifest(dest, CHUNK, tuple(_entry(r, d, modes.get(r, 0o644))
                                       for r, d in sorted(files.items())))


def _instrs(text: str):
    return [j for s in parse_job_text(text) for j in s.jobs]


def test_unknown_node_state_sends_everything():
    new = _manifest({"a": b"x" * 10, "b": b"y" * 5000})
    out = file_changes(new, None)
    assert out["known"] is False and out["bytes"] == 5010
    assert [(f["path"], f["status"], f["bytes"]) for f in out["files"]] == [
        ("/srv/app/a", "would send", 10), ("/srv/app/b", "would send", 5000)]


def test_changes_against_the_last_copy():
    old = _manifest({"same": b"s" * 100, "edit": b"A" * CHUNK + b"B" * 10, "mode": b"m"})
    new = _manifest({"same": b"s" * 100, "edit": b"A" * CHUNK + b"C" * 10, "mode": b"m",
                     "new": b"n" * 7}, mode=0o600)
    out = file_changes(new, old)
    status = {f["path"].rsplit("/", 1)[1]: (f["status"], f["bytes"]) for f in out["files"]}
    # only the changed chunk of 'edit' moves; a mode change is a change with no bytes
    assert status == {"same": ("unchanged", 0), "edit": ("would change", 10),
                      "mode": ("would change", 0), "new": ("would send", 7)}
    assert out["counts"] == {"unchanged": 1, "would change": 2, "would send": 1}
    assert out["known"] is True and out["bytes"] == 17


@given(st.dictionaries(st.sampled_from("abcdef"), st.binary(max_size=3 * CHUNK), max_size=6))
def test_a_manifest_against_itself_changes_nothing(files):
    m = _manifest(files)
    out = file_changes(m, m)
    assert out["bytes"] == 0 and out["counts"]["unchanged"] == len(files)
    assert file_changes(m, None)["bytes"] == sum(len(d) for d in files.values())


def test_names_set_at_run_time():
    instrs = _instrs("RUN --stdout-arg OUT uname -r\nARG PLAIN=x\nRUN echo ${PLAIN}\n"
                     "ARG COPIED=${OUT}\nRUN echo {{ COPIED }}\nRUN echo ${OUT} ${PLAIN}\n"
                     "RUN --stderr-arg ERR true\nECHO ${ERR}")
    assert run_time_names(instrs) == [[], [], [], ["OUT"], ["COPIED"], ["OUT"], [], ["ERR"]]
    # a name used before the job that sets it is not set at run time yet
    assert run_time_names(_instrs("RUN echo ${X}\nRUN --stdout-arg X true")) == [[], []]
    # an operator ARG set again later is known again
    assert run_time_names(_instrs("RUN --stdout-arg X true\nARG X=1\nECHO ${X}")) == [
        [], [], []]
    # after a CACHEFILE, a name no operator ARG set may come from it
    assert run_time_names(_instrs(
        "ARG A=1\nCACHEFILE c.yaml\nECHO {{ A }} {{ B | first }}\nRUN echo ${C}")) == [
        [], [], ["B"], ["C"]]


def test_copy_records_are_bounded_by_files():
    rec = CopyRecords(max_files=10)
    small = _manifest({"a": b"1"}, dest="/a/")
    big = _manifest({str(i): b"x" for i in range(20)}, dest="/b/")
    rec.record("k1", small)
    rec.record("k1", big)          # larger than the bound: not remembered
    assert rec.last("k1", "/a/") is small and rec.last("k1", "/b/") is None
    for n in range(10):            # the oldest records give way
        rec.record(f"n{n}", small)
    assert rec.last("k1", "/a/") is None and rec.last("n9", "/a/") is small


def test_definition_hash_is_the_job_hash_before_any_node_state():
    [run] = _instrs("RUN --timeout 5 echo ${X}")
    [other] = _instrs("RUN --timeout 9 echo ${X}")
    assert definition_hash(run) == job_hash(run, env={}, workdir="")
    assert definition_hash(run) == definition_hash(other)  # timeout only steers execution
    assert definition_hash(run, "d1") != definition_hash(run, "d2")


@pytest.mark.parametrize("line", [
    "RUN echo hi", 'RUN ["echo", "two"]', "RUN --stdout-arg X --stderr-arg Y uname -r",
    "RUN --skip-cache --timeout 9 true", "COPY --chmod 0644 --chown=a:b src/ /dst/",
    "ADD --blueprint a.j2 /etc/", "COPY a b", "ARG A=1", "ENV E=x y", "WORKDIR w",
    "WORKDIR --chmod 0750 --chown=u w", "SERVICE --enable --restarted a.service b.service",
    "ECHO {{ x }}", "CACHEFILE c.yaml", "CACHEEVICT all"])
@given(extra=st.sampled_from(["", "ab" * 32]))
def test_stored_hash_is_the_definition_hash(line, extra):
    """job --json computes it from the stored JSON; it must be the hash of the job."""
    [instr] = _instrs(line)
    stored = json.loads(json.dumps(instr.to_dict()))
    assert stored_hash(stored, extra) == definition_hash(instr, extra)


def test_stored_hash_of_a_yaml_job_with_vars():
    from director.jobs.files import parse_yaml

    [step] = parse_yaml("- jobs:\n  - RUN: echo {{ vars.x }}\n    vars: {x: 1}\n", "t.yaml")
    [instr] = step.jobs
    assert instr.vars
    assert stored_hash(json.loads(json.dumps(instr.to_dict()))) == definition_hash(instr)
