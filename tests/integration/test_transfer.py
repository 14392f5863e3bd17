"""COPY end to end: a real server (64 KiB chunks) and two real clients.

One mesh is shared by the module for speed.  Each node gets its own destination
root through a per-node ARG (``${D}``, set by ``copy`` in the same submission: ARG
values live for one submission), so every COPY below fans out to both nodes at once
without the two (same-machine) nodes writing the same paths.
Every test uses fresh random content, so chunks one test left in a node's
content store never make another test's byte counts wrong.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import signal
import stat
import tempfile
import uuid
from pathlib import Path

import pytest
import zmq.utils.z85
from conftest import Mesh

from director.protocol.messages import Chunk, ChunkReq, decode, encode
from director.trust import keystore

CHUNK = 65536
NODES = ("a", "b")
TRANSFER_FIELDS = {"files", "bytes_total", "bytes_sent", "chunks_sent", "chunks_reused",
                   "skipped"}


class Env:
    """The shared mesh plus where sources and each node's destinations live."""

    def __init__(self, mesh, root: Path):
        self.m = mesh
        self.root = root                      # short /tmp dir, removed at the end
        self.src = root / "src"
        self.src.mkdir()
        self.dest = {n: root / f"n-{n}" for n in NODES}  # what ${D} is on each node


@pytest.fixture(scope="module")
def env():
    m = Mesh()
    root = Path(tempfile.mkdtemp(prefix="dt", dir="/tmp"))
    try:
        # node_expiry well above the few seconds a client is SIGSTOPped below.
        m.server(chunk_size=CHUNK, node_expiry=15)
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


# -- helpers ----------------------------------------------------------------------------
def uid() -> str:
    return uuid.uuid4().hex[:8]


def exec_wait(m, line: str, *targets: str, expect_rc: int = 0, cwd=None) -> dict:
    """``exec --wait --json`` one line; the single job document."""
    opts = [a for t in targets for a in ("--target", t)]
    cp = m.cli("exec", "--wait", "--json", *opts, line, cwd=cwd, timeout=60)
    assert cp.returncode == expect_rc, (cp.returncode, cp.stdout, cp.stderr)
    docs = json.loads(cp.stdout)
    assert isinstance(docs, list) and len(docs) == 1, docs
    return docs[0]


def copy(e: Env, line: str, *targets: str, expect_rc: int = 0, cwd=None,
         node_args: dict[str, dict[str, str]] | None = None) -> dict:
    """Run a COPY line on ``targets`` (default both), after each node's ``ARG D`` (and
    ``node_args``) in the same orchestration, written in ``cwd`` (so relative sources
    resolve there, as an ``exec``'s would); the COPY's job document."""
    names = targets or NODES
    steps = []
    for name in names:
        values = {"D": str(e.dest[name]), **(node_args or {}).get(name, {})}
        steps.append({"targets": [name], "jobs": [{"ARG": f"{k} {v}"} for k, v in values.items()]})
    verb, args = line.split(" ", 1)
    steps.append({"targets": list(names), "jobs": [{verb: args}]})
    where = Path(cwd or e.m.root)
    plan = where / f".copy-{uid()}.yaml"
    plan.write_text(json.dumps(steps))
    try:
        cp = e.m.cli("orchestrate", "--wait", "--json", str(plan), cwd=where, timeout=60)
    finally:
        plan.unlink()
    assert cp.returncode == expect_rc, (cp.returncode, cp.stdout, cp.stderr)
    doc = json.loads(cp.stdout)[-1]
    assert doc["verb"] in ("COPY", "ADD"), doc
    assert set(doc["results"]) == set(targets or NODES), doc["results"].keys()
    if expect_rc == 0:
        assert doc["status"] == "success", doc
        for name, r in doc["results"].items():
            assert r["status"] == "success", (name, r)
            t = r["transfer"]
            assert isinstance(t, dict) and set(t) == TRANSFER_FIELDS, (name, t)
            assert all(isinstance(v, int) and not isinstance(v, bool) for v in t.values()), t
    return doc


def transfers(doc: dict) -> dict[str, dict]:
    return {n: r["transfer"] for n, r in doc["results"].items()}


def rand(n: int) -> bytes:
    return os.urandom(n)


def write(path: Path, data: bytes, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mode is not None:
        os.chmod(path, mode)
    return path


def digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes()).hexdigest()


def tree(top: Path) -> tuple[dict[str, str], set[str]]:
    """({rel file: blake2b}, {rel dir}) of a directory, symlinks not followed."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(top):
        rel = os.path.relpath(dirpath, top)
        for d in dirnames:
            dirs.add(os.path.normpath(os.path.join(rel, d)))
        for f in filenames:
            p = Path(dirpath, f)
            key = os.path.normpath(os.path.join(rel, f))
            files[key] = "symlink" if p.is_symlink() else digest(p)
    return files, dirs


def nchunks(size: int) -> int:
    return -(-size // CHUNK)


# -- files, trees, globs ---------------------------------------------------------------
def test_file_to_file_and_into_directory(env):
    tag = uid()
    size = 5 * CHUNK + 1234  # 6 chunks, the last one short
    src = write(env.src / tag / "one.bin", rand(size))

    doc = copy(env, f"COPY {src} ${{D}}/{tag}/file/renamed.bin")
    for name, t in transfers(doc).items():
        out = env.dest[name] / tag / "file" / "renamed.bin"
        assert out.is_file() and digest(out) == digest(src), name
        assert t == {"files": 1, "bytes_total": size, "bytes_sent": size,
                     "chunks_sent": 6, "chunks_reused": 0, "skipped": 0}, (name, t)
    assert doc["results"]["a"]["cached"] is False

    # DEST ending in "/" is a directory; the node already holds every chunk of this
    # content, so the new file is assembled locally and nothing is sent.
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/dir/")
    for name, t in transfers(doc).items():
        out = env.dest[name] / tag / "dir" / "one.bin"
        assert out.is_file() and digest(out) == digest(src), name
        assert t == {"files": 1, "bytes_total": size, "bytes_sent": 0,
                     "chunks_sent": 0, "chunks_reused": 6, "skipped": 0}, (name, t)

    # The job document from `job ID --json` carries the same transfer fields.
    again = env.m.json("job", doc["id"])
    assert set(again["results"]["b"]["transfer"]) == TRANSFER_FIELDS


def _make_tree(top: Path) -> None:
    write(top / "a.txt", b"alpha " + rand(100))
    write(top / "sub" / "b.bin", rand(4 * CHUNK + 77), mode=0o600)
    write(top / "sub" / "deep" / "c.txt", rand(3000), mode=0o755)
    write(top / "sub" / "deep" / "empty.txt", b"")
    (top / "empty").mkdir()
    (top / "sub" / "empty2").mkdir()
    (top / "link").symlink_to(top / "a.txt")  # symlinks in a source tree are skipped


def test_tree_recursive_redeploy_and_restore(env):
    tag = uid()
    top = env.src / tag / "site"
    _make_tree(top)
    files, dirs = tree(top)
    del files["link"]
    size = sum((top / f).stat().st_size for f in files)

    doc = copy(env, f"COPY {top} ${{D}}/{tag}/www/")
    for name, t in transfers(doc).items():
        out = env.dest[name] / tag / "www"
        assert tree(out) == (files, dirs), name  # byte-identical, empty dirs, no symlink
        assert (out / "empty").is_dir() and (out / "sub" / "empty2").is_dir()
        assert stat.S_IMODE((out / "sub" / "b.bin").stat().st_mode) == 0o600
        assert stat.S_IMODE((out / "sub" / "deep" / "c.txt").stat().st_mode) == 0o755
        assert t["files"] == len(files) == 4 and t["bytes_total"] == size
        assert t["bytes_sent"] == size and t["skipped"] == 0, t
        assert t["chunks_sent"] + t["chunks_reused"] == 1 + 5 + 1 + 0, t

    # Redeploy: nothing sent, every file skipped, answered as cached.
    doc = copy(env, f"COPY {top} ${{D}}/{tag}/www/")
    for name, r in doc["results"].items():
        t = r["transfer"]
        assert t["bytes_sent"] == 0 and t["chunks_sent"] == 0, (name, t)
        assert t["skipped"] == t["files"] == 4, (name, t)
        assert r["cached"] is True, (name, r)
        assert tree(env.dest[name] / tag / "www") == (files, dirs)

    # A deleted destination file is restored (only that file is touched; its chunks
    # may still be in the node's content store, so at most its size is sent).
    gone = {n: env.dest[n] / tag / "www" / "sub" / "b.bin" for n in NODES}
    for p in gone.values():
        p.unlink()
    doc = copy(env, f"COPY {top} ${{D}}/{tag}/www/")
    for name, r in doc["results"].items():
        t = r["transfer"]
        assert gone[name].is_file() and digest(gone[name]) == files["sub/b.bin"], name
        assert t["skipped"] == 3 and t["bytes_sent"] <= gone[name].stat().st_size, (name, t)
        assert t["chunks_sent"] + t["chunks_reused"] >= 5, t
        assert r["cached"] is False, (name, r)
        assert tree(env.dest[name] / tag / "www") == (files, dirs)


def test_glob_relative_to_cli_cwd(env):
    tag = uid()
    base = env.src / tag
    want = {"x.txt": rand(2 * CHUNK + 5), "y.txt": b"why\n"}
    for rel, data in want.items():
        write(base / "src" / rel, data)
    write(base / "src" / "z.bin", rand(500))
    write(base / "src" / "nested" / "w.txt", b"not matched by src/*.txt\n")

    doc = copy(env, f"COPY src/*.txt ${{D}}/{tag}/g/", cwd=base)
    for name, t in transfers(doc).items():
        out = env.dest[name] / tag / "g"
        assert sorted(os.listdir(out)) == ["x.txt", "y.txt"], name
        for rel, data in want.items():
            assert digest(out / rel) == hashlib.blake2b(data).hexdigest()
        assert t["files"] == 2 and t["bytes_sent"] == sum(map(len, want.values())), t

    # A plain relative path is resolved against the CLI's cwd too.
    doc = copy(env, f"COPY src/z.bin ${{D}}/{tag}/rel.bin", cwd=base)
    for name in NODES:
        assert digest(env.dest[name] / tag / "rel.bin") == digest(base / "src" / "z.bin")


# -- delta ------------------------------------------------------------------------------
def test_hundred_byte_change_sends_one_chunk(env):
    tag = uid()
    size = 15 * CHUNK + 4321  # 16 chunks
    src = write(env.src / tag / "big.bin", rand(size))
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/")
    for name, t in transfers(doc).items():
        assert t["bytes_sent"] == size and t["chunks_sent"] == 16, t

    with open(src, "r+b") as f:  # 100 bytes in the middle of chunk 8
        f.seek(8 * CHUNK + 1000)
        f.write(rand(100))
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/")
    for name, t in transfers(doc).items():
        out = env.dest[name] / tag / "big.bin"
        assert digest(out) == digest(src), name
        assert t["chunks_sent"] == 1 and t["bytes_sent"] == CHUNK, (name, t)
        assert t["chunks_reused"] == 15 and t["skipped"] == 0 and t["files"] == 1, t
    assert doc["results"]["a"]["cached"] is False


# -- attributes -----------------------------------------------------------------------
def test_chmod_applied_and_converges(env):
    tag = uid()
    src = write(env.src / tag / "conf.ini", rand(CHUNK + 10), mode=0o644)
    line = f"COPY --chmod 640 {src} ${{D}}/{tag}/"
    copy(env, line)
    outs = {n: env.dest[n] / tag / "conf.ini" for n in NODES}
    for p in outs.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640

    for p in outs.values():
        os.chmod(p, 0o600)
    doc = copy(env, line)
    for name, t in transfers(doc).items():
        assert stat.S_IMODE(outs[name].stat().st_mode) == 0o640, name
        assert t["bytes_sent"] == 0 and t["skipped"] == 1, t
        assert digest(outs[name]) == digest(src)

    # Without --chmod the source's mode is what converges.
    os.chmod(src, 0o751)
    line = f"COPY {src} ${{D}}/{tag}/plain/"
    copy(env, line)
    outs = {n: env.dest[n] / tag / "plain" / "conf.ini" for n in NODES}
    for p in outs.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o751
        os.chmod(p, 0o600)
    doc = copy(env, line)
    for name, t in transfers(doc).items():
        assert stat.S_IMODE(outs[name].stat().st_mode) == 0o751
        assert t["bytes_sent"] == 0 and t["skipped"] == 1, t


def test_chown_by_name_and_converges(env):
    tag = uid()
    src = write(env.src / tag / "owned.txt", rand(700))
    me = pwd.getpwuid(os.getuid()).pw_name
    my_group = grp.getgrgid(os.getgid()).gr_name
    copy(env, f"COPY --chown {me}:{my_group} {src} ${{D}}/{tag}/mine/")
    for name in NODES:
        st = (env.dest[name] / tag / "mine" / "owned.txt").stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())

    if os.geteuid() != 0:
        return
    try:
        nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody:nogroup on this machine")
    line = f"COPY --chown nobody:nogroup --chmod 644 {src} ${{D}}/{tag}/theirs/"
    copy(env, line)
    outs = {n: env.dest[n] / tag / "theirs" / "owned.txt" for n in NODES}
    for p in outs.values():
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (nobody, nogroup)
        assert stat.S_IMODE(st.st_mode) == 0o644
        os.chown(p, 0, 0)  # drift by hand; content unchanged
    doc = copy(env, line)
    for name, t in transfers(doc).items():
        st = outs[name].stat()
        assert (st.st_uid, st.st_gid) == (nobody, nogroup), name
        assert t["bytes_sent"] == 0 and t["skipped"] == 1, t

    # Unknown user on the node: a per-node failure, not a crash.
    doc = copy(env, f"COPY --chown no-such-user-{tag} {src} ${{D}}/{tag}/x/", "a",
               expect_rc=2)
    assert doc["results"]["a"]["status"] == "failed"
    assert "no-such-user" in doc["results"]["a"]["error"]


# -- refusals ----------------------------------------------------------------------------
def test_symlink_at_destination_refused(env):
    tag = uid()
    src = write(env.src / tag / "payload.txt", b"attacker wants this written\n")
    elsewhere = env.root / f"elsewhere-{tag}"
    victim = write(elsewhere / "victim.txt", b"original victim content\n")
    for name in NODES:
        d = env.dest[name] / tag
        d.mkdir(parents=True)
        (d / "target.txt").symlink_to(victim)
        (d / "linkdir").symlink_to(elsewhere, target_is_directory=True)

    doc = copy(env, f"COPY {src} ${{D}}/{tag}/target.txt", expect_rc=2)
    for name, r in doc["results"].items():
        assert r["status"] == "failed", (name, r)
        assert "symlink" in r["error"], r["error"]
        assert (env.dest[name] / tag / "target.txt").is_symlink()
    assert victim.read_bytes() == b"original victim content\n"

    # A symlinked directory on the way to DEST is refused as well.
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/linkdir/", expect_rc=2)
    for name, r in doc["results"].items():
        assert r["status"] == "failed" and "symlink" in r["error"], (name, r)
    assert sorted(os.listdir(elsewhere)) == ["victim.txt"]
    assert victim.read_bytes() == b"original victim content\n"


def _job_ids(m) -> list[str]:
    return [j["id"] for j in m.json("jobs", "-n", "10000")]


def _one_line_error(cp, *needles: str) -> None:
    assert cp.returncode not in (0, None), (cp.returncode, cp.stdout, cp.stderr)
    err = cp.stderr.strip()
    assert err and "\n" not in err, f"not one line: {cp.stderr!r}"
    assert "Traceback" not in cp.stderr
    for needle in needles:
        assert needle in err, (needle, err)


def test_missing_source_fails_before_anything_is_sent(env):
    tag = uid()
    ok = write(env.src / tag / "exists.txt", b"here\n")
    before = _job_ids(env.m)
    for line in (f"COPY {env.src}/{tag}/nope.txt ${{D}}/{tag}/",
                 f"COPY {ok} {env.src}/{tag}/nope.txt ${{D}}/{tag}/",  # one of two missing
                 f"COPY {env.src}/{tag}/*.nomatch ${{D}}/{tag}/"):
        cp = env.m.cli("exec", "--wait", line, timeout=30)
        _one_line_error(cp, "not found")
    cp = env.m.cli("exec", "--wait", f"COPY missing-{tag}.txt /tmp/x/", cwd=env.src)
    _one_line_error(cp, f"missing-{tag}.txt", str(env.src))
    assert _job_ids(env.m) == before  # no job was created
    for name in NODES:
        assert not (env.dest[name] / tag).exists()


def test_arg_substitution_in_dest(env):
    tag = uid()
    src = write(env.src / tag / "f.txt", rand(300))
    out = {name: {f"OUT_{tag}": f"{env.dest[name]}/{tag}/by-arg"} for name in NODES}
    copy(env, f"COPY {src} ${{OUT_{tag}}}/", node_args=out)
    copy(env, f"COPY {src} {{{{ OUT_{tag} }}}}/braces.txt", node_args=out)
    for name in NODES:
        out = env.dest[name] / tag / "by-arg"
        assert digest(out / "f.txt") == digest(src)
        assert digest(out / "braces.txt") == digest(src)


# -- authorization of chunk requests ------------------------------------------------------
def _chunk_replies(peer, timeout: float) -> list:
    return [decode(f) for f in peer.recv_all(timeout)]


def test_node_cannot_fetch_chunks_of_another_nodes_job(env):
    m = env.m
    tag = uid()
    data = rand(3 * CHUNK)
    src = write(env.src / tag / "secret.bin", data)
    server_key = zmq.utils.z85.decode(m.server_key().encode())
    as_a = m.raw_peer(keystore.load(m.homes["a"]), server_key)
    as_b = m.raw_peer(keystore.load(m.homes["b"]), server_key)

    # Freeze b so its COPY stays in flight (sent to b, not answered).
    b = m.clients["b"]
    b.signal(signal.SIGSTOP)
    try:
        cp = m.cli("exec", "--target", "b", f"COPY {src} {env.dest['b']}/{tag}/")
        assert cp.returncode == 0, cp.stderr
        job = cp.stdout.strip()
        m.wait_for(lambda: m.json("job", job)["results"]["b"]["status"] == "running",
                   timeout=5, what="COPY running on b")

        # a (an accepted node, with its own real key) asks for b's chunks: nothing.
        as_a.send(encode(ChunkReq(job, ((0, 0), (0, 1)))))
        as_a.send(encode(ChunkReq(os.urandom(8).hex(), ((0, 0),))))  # a job never issued
        # b's key may fetch them (proves the refusal above is not vacuous).
        as_b.send(encode(ChunkReq(job, ((0, 1),))))
        got_b = _chunk_replies(as_b, 1.0)
        got_a = _chunk_replies(as_a, 0.2)
    finally:
        b.signal(signal.SIGCONT)
    assert not any(isinstance(g, Chunk) for g in got_a), got_a  # refused: no data, only
    assert [(g.file, g.chunk) for g in got_a] == [(-1, -1), (-1, -1)], got_a  # CHUNK_ERR
    assert [type(g) for g in got_b] == [Chunk], got_b
    assert got_b[0] == Chunk(job, 0, 1, data[CHUNK:2 * CHUNK])

    m.wait_for(lambda: m.json("job", job)["status"] == "success", timeout=15,
               what="b's COPY finishing after SIGCONT")
    assert digest(env.dest["b"] / tag / "secret.bin") == digest(src)
    assert not (env.dest["a"] / tag).exists()

    # Once finished, the job's chunks are served to nobody (not even b).
    as_b.send(encode(ChunkReq(job, ((0, 0),))))
    as_a.send(encode(ChunkReq(job, ((0, 0),))))
    late = _chunk_replies(as_b, 1.0) + _chunk_replies(as_a, 0.1)
    assert late and not any(isinstance(g, Chunk) for g in late), late
    assert m.cli("health").returncode == 0
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/again/", "a")  # the server still serves
    assert doc["results"]["a"]["transfer"]["bytes_sent"] == len(data)
    assert digest(env.dest["a"] / tag / "again" / "secret.bin") == digest(src)



def test_an_edit_that_keeps_size_and_mtime_is_restored_and_never_reused(env):
    """A deployed file edited in place with its size and mtime put back (its ctime still
    moves): a redeploy restores it, and it is never used as a local source of good
    chunks for another copy (the stat cache's key holds ctime and inode)."""
    tag = uid()
    data = rand(2 * CHUNK + 9)
    src = write(env.src / tag / "s.bin", data)
    copy(env, f"COPY {src} ${{D}}/{tag}/one/", "a")
    one = env.dest["a"] / tag / "one" / "s.bin"
    st = os.stat(one)
    with open(one, "r+b") as f:
        f.write(b"garbage")  # same size, wrong bytes
    os.utime(one, ns=(st.st_atime_ns, st.st_mtime_ns))

    out = env.dest["a"] / tag / "two"
    write(out / "s.bin", b"previous content\n")
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/two/", "a")
    assert doc["results"]["a"]["transfer"]["bytes_sent"] == len(data)  # not from `one`
    assert digest(out / "s.bin") == digest(src)
    assert os.listdir(out) == ["s.bin"]  # no temp file left behind
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/one/", "a")  # the edited file is restored
    assert doc["results"]["a"]["transfer"]["skipped"] == 0
    assert digest(one) == digest(src)


def test_repeated_content_is_fetched_once_and_add_works(env):
    tag = uid()
    block = rand(CHUNK)
    twin = block * 3 + rand(10)  # chunks 0..2 identical
    write(env.src / tag / "d" / "x.bin", twin)
    write(env.src / tag / "d" / "y.bin", twin)  # the same content again
    doc = copy(env, f"ADD {env.src / tag / 'd'} ${{D}}/{tag}/dup/")
    assert doc["verb"] == "ADD"
    for name, t in transfers(doc).items():
        for f in ("x.bin", "y.bin"):
            assert (env.dest[name] / tag / "dup" / f).read_bytes() == twin
        # 8 chunk slots, 2 distinct contents: each distinct chunk crosses the wire once.
        assert t["chunks_sent"] == 2 and t["bytes_sent"] == CHUNK + 10, t
        assert t["chunks_reused"] == 6 and t["bytes_total"] == 2 * len(twin), t


def test_source_changed_while_in_flight_fails_cleanly(env):
    """The server re-verifies each chunk it serves: a source changed after the manifest
    was built is refused, and the node fails without touching its destination."""
    m = env.m
    tag = uid()
    src = write(env.src / tag / "moving.bin", rand(2 * CHUNK))
    out = write(env.dest["b"] / tag / "moving.bin", b"old\n")
    b = m.clients["b"]
    b.signal(signal.SIGSTOP)
    try:
        cp = m.cli("exec", "--target", "b", f"COPY {src} {env.dest['b']}/{tag}/")
        assert cp.returncode == 0, cp.stderr
        job = cp.stdout.strip()
        write(src, rand(2 * CHUNK))  # same size, new content, after submission
    finally:
        b.signal(signal.SIGCONT)
    doc = m.wait_for(lambda: (d := m.json("job", job))["status"] not in ("queued", "running")
                     and d, timeout=20, what="the COPY to finish")
    r = doc["results"]["b"]
    assert r["status"] == "failed", r
    assert "changed" in r["error"], r["error"]
    assert out.read_bytes() == b"old\n" and os.listdir(out.parent) == ["moving.bin"]
    # Re-running picks up the new content.
    copy(env, f"COPY {src} ${{D}}/{tag}/", "b")
    assert digest(out) == digest(src)



def test_restarted_node_sends_nothing_and_removes_stale_temp_files(env):
    """The node's stat cache survives a restart (redeploy still sends 0 bytes) and temp
    files an interrupted transfer left in a destination directory are removed at start."""
    m = env.m
    tag = uid()
    src = write(env.src / tag / "r.bin", rand(CHUNK + 1))
    line = f"COPY {src} ${{D}}/{tag}/"
    copy(env, line, "a")
    # What a transfer cut short by a crash leaves: a temp file, and the note naming its dir.
    stale = write(env.dest["a"] / tag / ".director-tmp-deadbeef00000000", b"partial")
    (Path(m.homes["a"]) / "transfer" / "inflight.json").write_text(
        json.dumps([str(stale.parent)]))
    _, killed = m.clients["a"].stop()
    assert not killed
    m.wait_online("a", proc=m.client("a"))

    doc = copy(env, line, "a")
    t = doc["results"]["a"]["transfer"]
    assert t["bytes_sent"] == 0 and t["skipped"] == 1 == t["files"], t
    assert not stale.exists()
    assert sorted(os.listdir(env.dest["a"] / tag)) == ["r.bin"]


def test_file_onto_existing_directory_and_empty_directory_source(env):
    tag = uid()
    src = write(env.src / tag / "f.txt", b"f\n")
    for name in NODES:
        (env.dest[name] / tag / "isdir").mkdir(parents=True)
    doc = copy(env, f"COPY {src} ${{D}}/{tag}/isdir", expect_rc=2)
    for name, r in doc["results"].items():
        assert r["status"] == "failed" and "'/'" in r["error"], r["error"]
        assert os.listdir(env.dest[name] / tag / "isdir") == []
    empty = env.src / tag / "emptysrc"
    empty.mkdir()
    doc = copy(env, f"COPY {empty} ${{D}}/{tag}/newempty/")
    for name, t in transfers(doc).items():
        assert (env.dest[name] / tag / "newempty").is_dir()
        assert t == dict.fromkeys(TRANSFER_FIELDS, 0), t
