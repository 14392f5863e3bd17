"""GET end to end: a real server and two real clients fetch files into DEST_DIR/NODE.

One mesh for the module (get_max_bytes set low so the limit is cheap to reach).
Each node reads its own source directory, named through a per-node ``ARG S`` in
the same orchestration, so the two (same-machine) nodes send different content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import Mesh

NODES = ("a", "b")
LIMIT = 4_000_000
TRANSFER_FIELDS = {"files", "bytes_total", "bytes_sent", "chunks_sent", "chunks_reused",
                   "skipped"}


class Env:
    def __init__(self, mesh: Mesh, root: Path):
        self.m = mesh
        self.root = root
        self.src = {n: root / f"src-{n}" for n in NODES}
        for d in self.src.values():
            d.mkdir()


@pytest.fixture(scope="module")
def env():
    m = Mesh()
    root = Path(tempfile.mkdtemp(prefix="dg", dir="/tmp"))
    try:
        m.server(env={"DIRECTOR_GET_MAX_BYTES": str(LIMIT)})
        for name in NODES:
            m.add_node(name)
        yield Env(m, root)
    finally:
        problems = m.close()
        logs = m.logs()
        m.cleanup()
        shutil.rmtree(root, ignore_errors=True)
        assert not problems, "; ".join(problems)
        assert "Traceback" not in logs, logs[-4000:]


def get(e: Env, line: str, expect_rc: int = 0, cwd: Path | None = None) -> dict:
    """Run ``line`` (a GET using ``${S}``) on both nodes after each node's ``ARG S``;
    the GET's job document."""
    steps = [{"targets": [n], "jobs": [{"ARG": f"S {e.src[n]}"}]} for n in NODES]
    verb, args = line.split(" ", 1)
    steps.append({"targets": list(NODES), "jobs": [{verb: args}]})
    where = cwd or e.root
    plan = where / f".get-{uuid.uuid4().hex[:8]}.yaml"
    plan.write_text(json.dumps(steps))
    try:
        cp = e.m.cli("orchestrate", "--wait", "--json", str(plan), cwd=where, timeout=60)
    finally:
        plan.unlink()
    assert cp.returncode == expect_rc, (cp.returncode, cp.stdout, cp.stderr)
    doc = json.loads(cp.stdout)[-1]
    assert doc["verb"] == "GET", doc
    assert set(doc["results"]) == set(NODES)
    if expect_rc == 0:
        for name, r in doc["results"].items():
            assert r["status"] == "success", (name, r)
            assert set(r["transfer"]) == TRANSFER_FIELDS, r
    return doc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_file_and_glob_from_two_nodes_then_skip_then_refetch(env):
    tag = uuid.uuid4().hex[:6]
    for n in NODES:
        (env.src[n] / f"{tag}.conf").write_bytes(os.urandom(1000))
        (env.src[n] / f"{tag}-1.log").write_bytes(os.urandom(2_500_000))  # 3 chunks
        (env.src[n] / f"{tag}-2.log").write_bytes(os.urandom(5))
        (env.src[n] / f"{tag}.other").write_bytes(b"not matched")
    dest = env.root / f"out-{tag}"
    line = f"GET ${{S}}/{tag}.conf ${{S}}/{tag}-*.log {dest}"
    doc = get(env, line)
    for n in NODES:
        got = sorted(p.name for p in (dest / n).iterdir())
        assert got == sorted([f"{tag}.conf", f"{tag}-1.log", f"{tag}-2.log"]), got
        for name in got:
            assert sha(dest / n / name) == sha(env.src[n] / name)
        t = doc["results"][n]["transfer"]
        assert t["files"] == 3 and t["skipped"] == 0
        assert t["bytes_sent"] == t["bytes_total"] == 2_501_005
        assert t["chunks_sent"] == 5
    assert sha(dest / "a" / f"{tag}.conf") != sha(dest / "b" / f"{tag}.conf")

    doc = get(env, line)  # nothing changed: nothing sent
    for n in NODES:
        t = doc["results"][n]["transfer"]
        assert (t["files"], t["skipped"], t["bytes_sent"], t["chunks_sent"]) == (3, 3, 0, 0), t

    (env.src["a"] / f"{tag}-2.log").write_bytes(b"changed on a")
    doc = get(env, line)
    ta, tb = doc["results"]["a"]["transfer"], doc["results"]["b"]["transfer"]
    assert (ta["skipped"], ta["bytes_sent"]) == (2, len(b"changed on a")), ta
    assert (tb["skipped"], tb["bytes_sent"]) == (3, 0), tb
    assert (dest / "a" / f"{tag}-2.log").read_bytes() == b"changed on a"
    leftovers = [p for p in dest.rglob("*") if p.name.startswith(".director-get-")]
    assert not leftovers


def test_directory_and_relative_dest_of_an_orchestration(env):
    tag = uuid.uuid4().hex[:6]
    for n in NODES:
        sub = env.src[n] / f"tree-{tag}" / "deep" / "er"
        sub.mkdir(parents=True)
        (sub / "x.txt").write_text(f"x on {n}")
    here = env.root / f"plan-{tag}"
    here.mkdir()
    get(env, f"GET ${{S}}/tree-{tag} fetched", cwd=here)  # relative to the file's directory
    for n in NODES:
        assert (here / "fetched" / n / "deep" / "er" / "x.txt").read_text() == f"x on {n}"


def test_exec_relative_dest_is_the_cli_working_directory(env):
    tag = uuid.uuid4().hex[:6]
    src = env.root / f"one-{tag}.txt"
    src.write_text("same file, both nodes")
    cwd = env.root / f"cwd-{tag}"
    cwd.mkdir()
    cp = env.m.cli("exec", "--wait", "--json", f"GET {src} got", cwd=cwd, timeout=60)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    for n in NODES:
        assert (cwd / "got" / n / src.name).read_text() == "same file, both nodes"


def test_size_limit_fails_clearly_and_writes_nothing(env):
    tag = uuid.uuid4().hex[:6]
    for n in NODES:
        (env.src[n] / f"big-{tag}.bin").write_bytes(os.urandom(LIMIT + 1))
    dest = env.root / f"big-{tag}"
    doc = get(env, f"GET ${{S}}/big-{tag}.bin {dest}", expect_rc=2)
    for n in NODES:
        r = doc["results"][n]
        assert r["status"] == "failed", r
        assert "get_max_bytes" in r["error"] and f"{LIMIT:,}" in r["error"], r
    assert not any(p.is_file() for p in dest.rglob("*")) if dest.exists() else True


def test_missing_source_fails_on_the_node(env):
    dest = env.root / "never"
    doc = get(env, f"GET ${{S}}/no-such-{uuid.uuid4().hex[:6]} {dest}", expect_rc=2)
    for n in NODES:
        r = doc["results"][n]
        assert r["status"] == "failed" and "not found" in r["error"], r
        assert "GET source" in r["error"], r
