"""Node-side transfer blocks: content store, stat cache, planning, safe assembly."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from director.errors import TransferError
from director.transfer import statcache as statcache_mod
from director.transfer.chunking import (
    DigestCache, FileEntry, Manifest, build_manifest, digest_of, hash_file, read_chunk,
)
from director.transfer.store import (
    chunk_source,
    ContentStore, StatCache, apply_attrs, assemble, cleanup_temp_files, create_dirs,
    local_digest, parse_owner, plan_transfer, safe_target,
)

CS = 4096


@pytest.fixture
def cs(tmp_path) -> ContentStore:
    return ContentStore(tmp_path / "store")


@pytest.fixture
def sc(tmp_path) -> StatCache:
    cache = StatCache(tmp_path / "state" / "stat.db")
    yield cache
    cache.close()


def server_side(tmp_path: Path, files: dict[str, bytes], dest: str):
    src = tmp_path / "server" / "tree"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return build_manifest(["tree"], dest, base=tmp_path / "server", chunk_size=CS,
                          cache=DigestCache())


def deliver(manifest: Manifest, paths, plans, cs: ContentStore, sc: StatCache) -> int:
    """What the agent will do: fetch needed chunks from the server, then assemble."""
    sent = 0
    for plan in plans:
        entry = manifest.files[plan.index]
        for ci in plan.need:
            cs.put(entry.chunks[ci], read_chunk(paths[plan.index], entry, ci, CS))
            sent += 1
        if not plan.unchanged:
            assemble(entry, plan.target, CS, cs, sc, source=chunk_source(plan, CS, cs, sc))
    return sent


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob(".director-tmp-*")]


# --- content store ---------------------------------------------------------------

def test_content_store_put_get_has(cs, tmp_path):
    data = b"chunk" * 100
    d = digest_of(data)
    assert not cs.has(d) and cs.get(d) is None
    cs.put(d, data)
    assert cs.has(d) and cs.get(d) == data
    assert (tmp_path / "store" / d[:2] / d).read_bytes() == data
    assert cs.total_bytes == len(data)


def test_content_store_refuses_wrong_digest_and_bad_names(cs):
    with pytest.raises(TransferError, match="does not match"):
        cs.put(digest_of(b"a"), b"b")
    assert not cs.has(digest_of(b"a"))
    with pytest.raises(TransferError):
        cs.get("../../etc/passwd")


def test_content_store_corrupt_chunk_deleted_and_missing(cs, tmp_path):
    data = b"x" * 1000
    d = digest_of(data)
    cs.put(d, data)
    path = tmp_path / "store" / d[:2] / d
    path.write_bytes(b"y" * 1000)
    assert cs.get(d) is None
    assert not path.exists() and not cs.has(d)


def test_content_store_evicts_oldest_first_but_not_pinned(tmp_path):
    store = ContentStore(tmp_path / "s", max_bytes=3000)
    chunks = [bytes([i]) * 1000 for i in range(5)]
    ds = [digest_of(c) for c in chunks]
    store.put(ds[0], chunks[0])
    store.pin([ds[0]])
    for d, c in zip(ds[1:3], chunks[1:3]):
        store.put(d, c)
    assert store.get(ds[1]) == chunks[1]  # touch: now the newest
    store.put(ds[3], chunks[3])  # over budget: evict the least recently used unpinned
    assert [store.has(d) for d in ds[:4]] == [True, True, False, True]
    store.unpin([ds[0]])
    store.put(ds[4], chunks[4])
    assert not store.has(ds[0]) and store.total_bytes <= 3000


def test_content_store_survives_restart_and_drops_temps(tmp_path):
    store = ContentStore(tmp_path / "s")
    data = b"keep" * 10
    store.put(digest_of(data), data)
    stale = tmp_path / "s" / "ab" / ".director-tmp-dead"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"partial")
    again = ContentStore(tmp_path / "s")
    assert again.get(digest_of(data)) == data and again.total_bytes == len(data)
    assert not stale.exists()


# --- stat cache ------------------------------------------------------------------

def test_stat_cache_fresh_only_while_stat_matches(tmp_path, sc):
    f = tmp_path / "f"
    f.write_bytes(b"one")
    digest, chunks = hash_file(f, CS)
    sc.record(f, digest, chunks, chunk_size=CS)
    assert sc.lookup(f, CS) == (digest, chunks)
    assert sc.lookup(f, CS * 2) is None  # other chunk size: other chunks
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert sc.lookup(f, CS) is None
    sc.record(f, digest, chunks, chunk_size=CS)
    f.unlink()
    assert sc.lookup(f, CS) is None
    f.symlink_to(tmp_path)
    assert sc.lookup(f, CS) is None


def test_stat_cache_replaced_inode_is_stale_and_persisted(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"one")
    a = StatCache(tmp_path / "db")
    a.record(f, *hash_file(f, CS), chunk_size=CS)
    a.close()
    b = StatCache(tmp_path / "db")
    assert b.lookup(f, CS) == hash_file(f, CS)  # survives a restart
    st = f.stat()
    tmp = tmp_path / "g"
    tmp.write_bytes(b"two")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, f)  # same size and mtime, different inode
    assert b.lookup(f, CS) is None
    b.close()


def test_local_digest_hashes_once_then_uses_stat_cache(tmp_path, sc, monkeypatch):
    f = tmp_path / "f"
    f.write_bytes(b"z" * 5000)
    calls = []
    real = statcache_mod.hash_fd  # counts the hashing the stat cache spares
    monkeypatch.setattr(statcache_mod, "hash_fd",
                        lambda fd, n: calls.append(fd) or real(fd, n))
    assert local_digest(f, CS, sc) == hash_file(f, CS)
    assert local_digest(f, CS, sc) == hash_file(f, CS)
    assert len(calls) == 1
    assert local_digest(tmp_path / "missing", CS, sc) is None
    assert local_digest(tmp_path, CS, sc) is None


# --- safe_target -----------------------------------------------------------------

def test_safe_target_joins_and_normalizes(tmp_path):
    assert safe_target(str(tmp_path) + "/a/", "b/c") == tmp_path / "a" / "b" / "c"
    assert safe_target(str(tmp_path / "x"), "") == tmp_path / "x"


@pytest.mark.parametrize("dest,rel", [("relative/path", "f"), ("/ok", "../x"), ("/ok", "/abs")])
def test_safe_target_refuses_bad_paths(dest, rel):
    with pytest.raises(TransferError):
        safe_target(dest, rel)


def test_safe_target_refuses_symlink_components(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "linkdir").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "file").write_bytes(b"")
    (tmp_path / "real" / "linkfile").symlink_to(tmp_path / "real" / "file")
    with pytest.raises(TransferError,
                       match=f"refusing to write through symlink at {tmp_path}/linkdir"):
        safe_target(str(tmp_path / "linkdir"), "new")
    with pytest.raises(TransferError, match="symlink at .*linkfile"):
        safe_target(str(tmp_path / "real"), "linkfile")


# --- planning and assembly -------------------------------------------------------

def test_first_deploy_then_unchanged_needs_nothing(tmp_path, cs, sc):
    files = {"a.bin": os.urandom(CS * 3 + 5), "sub/b.txt": b"hello", "empty": b""}
    manifest, paths = server_side(tmp_path, files, str(tmp_path / "dest"))
    plans = plan_transfer(manifest, sc, cs)
    assert sum(len(p.need) for p in plans) == 5 and not any(p.unchanged for p in plans)
    assert deliver(manifest, paths, plans, cs, sc) == 5
    for rel, data in files.items():
        assert (tmp_path / "dest" / rel).read_bytes() == data
    again = plan_transfer(manifest, sc, cs)
    assert all(p.unchanged and p.need == () for p in again)


def test_one_changed_chunk_needs_one_chunk(tmp_path, sc):
    data = bytearray(os.urandom(CS * 4))
    dest = tmp_path / "dest" / "f.bin"
    dest.parent.mkdir()
    dest.write_bytes(data)
    data[CS * 2 + 10] ^= 0xFF
    manifest, paths = server_side(tmp_path, {"f.bin": bytes(data)}, str(tmp_path / "dest"))
    store = ContentStore(tmp_path / "fresh-store")
    plans = plan_transfer(manifest, sc, store)
    assert [(p.unchanged, p.need, p.reused) for p in plans] == [(False, (2,), 3)]
    assert plans[0].local == {0: 0, 1: 1, 3: 3}  # read from the current file at assembly
    assert deliver(manifest, paths, plans, store, sc) == 1
    assert dest.read_bytes() == bytes(data)


def test_content_already_in_store_needs_nothing_from_server(tmp_path, cs, sc):
    data = os.urandom(CS * 2 + 1)
    manifest, paths = server_side(tmp_path, {"one": data}, str(tmp_path / "d1"))
    deliver(manifest, paths, plan_transfer(manifest, sc, cs), cs, sc)
    other, other_paths = server_side(tmp_path, {"one": data, "two": data},
                                     str(tmp_path / "d2"))
    plans = plan_transfer(other, sc, cs)
    assert [p.need for p in plans] == [(), ()]
    assert deliver(other, other_paths, plans, cs, sc) == 0
    assert (tmp_path / "d2" / "two").read_bytes() == data


def test_repeated_chunk_is_fetched_once(tmp_path, cs, sc):
    manifest, _ = server_side(tmp_path, {"zeros": bytes(CS * 4)}, str(tmp_path / "d"))
    assert [p.need for p in plan_transfer(manifest, sc, cs)] == [(0,)]


_DATA: dict[str, bytes] = {}  # digest -> the bytes of an entry _two_chunk_entry made


def _two_chunk_entry(cs: ContentStore, mode: int = 0o600) -> FileEntry:
    """A file of two chunks (the second short) whose chunks are in ``cs``."""
    data = os.urandom(CS + 3)
    entry = FileEntry("", len(data), mode, digest_of(data),
                      (digest_of(data[:CS]), digest_of(data[CS:])))
    for piece in (data[:CS], data[CS:]):
        cs.put(digest_of(piece), piece)
    _DATA[entry.digest] = data
    return entry


def test_assemble_sets_mode_and_records_stat(tmp_path, cs, sc):
    entry = _two_chunk_entry(cs, 0o640)
    data = _DATA[entry.digest]
    target = tmp_path / "new" / "deep" / "f"
    assemble(entry, target, CS, cs, sc)
    assert target.read_bytes() == data and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sc.lookup(target, CS) == (entry.digest, entry.chunks)
    assemble(entry, target, CS, cs, sc, mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert no_temp_files(tmp_path / "new")


def test_symlink_at_destination_refused_nothing_written(tmp_path, cs, sc):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f").symlink_to(victim)
    manifest, paths = server_side(tmp_path, {"f": b"evil"}, str(tmp_path / "dest"))
    with pytest.raises(TransferError, match="refusing to write through symlink"):
        plan_transfer(manifest, sc, cs)
    entry = manifest.files[0]
    cs.put(entry.chunks[0], b"evil")
    with pytest.raises(TransferError, match="refusing to write through symlink"):
        assemble(entry, tmp_path / "dest" / "f", CS, cs, sc)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dlink").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(TransferError, match="refusing to write through symlink"):
        assemble(entry, tmp_path / "dlink" / "f", CS, cs, sc)
    assert victim.read_bytes() == b"precious"
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert no_temp_files(tmp_path / "dest")


def test_temp_removed_on_digest_failure_and_missing_chunk(tmp_path, cs, sc):
    cs.put(digest_of(b"data"), b"data")
    bad = FileEntry("", 4, 0o644, digest_of(b"other"), (digest_of(b"data"),))
    target = tmp_path / "out" / "f"
    with pytest.raises(TransferError, match="does not match"):
        assemble(bad, target, CS, cs, sc)
    missing = FileEntry("", 4, 0o644, digest_of(b"gone"), (digest_of(b"gone"),))
    with pytest.raises(TransferError, match="missing"):
        assemble(missing, target, CS, cs, sc)
    assert list((tmp_path / "out").iterdir()) == []


def test_assemble_refuses_directory_target(tmp_path, cs, sc):
    (tmp_path / "dir").mkdir()
    entry = FileEntry("", 0, 0o644, digest_of(b""), ())
    with pytest.raises(TransferError, match="directory"):
        assemble(entry, tmp_path / "dir", CS, cs, sc)


def test_create_dirs(tmp_path):
    manifest = Manifest(str(tmp_path / "d"), CS, (), ("a/b", "c"))
    assert create_dirs(manifest) == [tmp_path / "d" / "a" / "b", tmp_path / "d" / "c"]
    assert (tmp_path / "d" / "a" / "b").is_dir() and (tmp_path / "d" / "c").is_dir()


# --- attributes and cleanup ------------------------------------------------------

def test_apply_attrs_mode_owner_and_symlink(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    apply_attrs(f, 0o751, None)
    assert stat.S_IMODE(f.stat().st_mode) == 0o751
    uid, gid = os.getuid(), os.getgid()
    apply_attrs(f, None, f"{uid}:{gid}")
    assert (f.stat().st_uid, f.stat().st_gid) == (uid, gid)
    (tmp_path / "l").symlink_to(f)
    with pytest.raises(TransferError, match="symlink"):
        apply_attrs(tmp_path / "l", 0o600, None)
    assert stat.S_IMODE(f.stat().st_mode) == 0o751
    with pytest.raises(TransferError, match="unknown user"):
        apply_attrs(f, None, "no-such-user-director")
    if os.getuid() == 0:
        apply_attrs(f, None, "12345:12346")
        assert (f.stat().st_uid, f.stat().st_gid) == (12345, 12346)
    else:
        with pytest.raises(TransferError, match="not permitted"):
            apply_attrs(f, None, "0:0")


def test_parse_owner():
    assert parse_owner("0") == (0, -1)
    assert parse_owner(":0") == (-1, 0)
    assert parse_owner("root:0") == (0, 0)
    for bad in (":", "nobody-at-all-x:0", "0:no-such-group-x", "99999999999"):
        with pytest.raises(TransferError):
            parse_owner(bad)


def test_cleanup_temp_files(tmp_path):
    (tmp_path / ".director-tmp-abc").write_bytes(b"x")
    (tmp_path / "keep").write_bytes(b"y")
    assert cleanup_temp_files([tmp_path, tmp_path / "missing"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def test_background_digest_matches_a_plain_hash():
    from director.transfer.hashing import BackgroundDigest, hasher

    data = [os.urandom(100_000) for _ in range(20)]
    bg, plain = BackgroundDigest(), hasher()
    for part in data:
        bg.update(part)
        plain.update(part)
    assert bg.hexdigest() == plain.hexdigest()
    bg.close()  # closing twice is harmless


def test_large_file_assembles_with_the_background_digest(tmp_path, sc):
    from director.transfer.store import BACKGROUND_HASH

    big = 1024 * 1024
    data = os.urandom(BACKGROUND_HASH + 3 * big + 17)
    src = tmp_path / "server" / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    manifest, paths = build_manifest(["big.bin"], str(tmp_path / "dest") + "/",
                                     base=tmp_path / "server", chunk_size=big,
                                     cache=DigestCache())
    store = ContentStore(tmp_path / "store")
    (plan,) = plan_transfer(manifest, sc, store)
    entry = manifest.files[0]
    fetch = lambda i: read_chunk(paths[0], entry, i, big)  # noqa: E731 - the "server"
    assemble(entry, plan.target, big, store, sc, source=chunk_source(plan, big, store, sc, fetch))
    assert plan.target.read_bytes() == data
    # a corrupted byte is caught by the whole-file check and nothing is left behind
    def bad(i, d):  # chunk 5 with its first byte flipped (b"x" left it 1 in 256 times)
        data = fetch(i)
        return bytes([data[0] ^ 0xFF]) + data[1:] if i == 5 else data
    target = tmp_path / "dest2" / "big.bin"
    with pytest.raises(TransferError, match="does not match"):
        assemble(entry, target, big, store, sc, source=bad)
    assert not target.exists() and no_temp_files(target.parent)


def test_apply_attrs_never_touches_a_hard_link_to_an_outside_file(tmp_path):
    """A local user swaps the placed file for a hard link to a file outside the COPY
    between the rename and the chmod/chown: the outside file keeps its mode and owner."""
    outside = tmp_path / "outside" / "shadow"
    outside.parent.mkdir()
    outside.write_bytes(b"secret")
    outside.chmod(0o600)
    dest = tmp_path / "dest"
    dest.mkdir()
    placed = dest / "app.conf"
    placed.write_bytes(b"mine")
    st = placed.stat()
    placed.unlink()
    os.link(outside, placed)  # the swap
    with pytest.raises(TransferError, match="not the file this COPY placed"):
        apply_attrs(placed, 0o666, None, (st.st_dev, st.st_ino))
    with pytest.raises(TransferError, match="hard-linked"):
        apply_attrs(placed, 0o666, None)  # even without the placed inode: two names
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    other = dest / "other"
    other.write_bytes(b"x")
    ost = other.stat()
    os.unlink(other)
    other.write_bytes(b"y")  # replaced by a new file: another inode
    if other.stat().st_ino != ost.st_ino:
        with pytest.raises(TransferError, match="not the file this COPY placed"):
            apply_attrs(other, 0o644, None, (ost.st_dev, ost.st_ino))


def test_assemble_returns_the_placed_inode_and_apply_attrs_accepts_it(tmp_path, cs, sc):
    entry = _two_chunk_entry(cs)
    target = tmp_path / "d" / "f"
    st = assemble(entry, target, CS, cs, sc)
    assert (st.st_dev, st.st_ino) == (target.stat().st_dev, target.stat().st_ino)
    apply_attrs(target, 0o640, None, (st.st_dev, st.st_ino))
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_our_own_rename_and_chmod_keep_the_stat_cache_valid(tmp_path, cs, sc):
    """ctime is in the key, and our rename and chmod move it: right after them the cache
    takes the new ctime (only when inode, size and mtime still match), so an unchanged
    redeploy is still answered from the cache; a later edit that keeps size and mtime
    is not."""
    entry = _two_chunk_entry(cs)
    target = tmp_path / "d" / "f"
    st = assemble(entry, target, CS, cs, sc)
    assert sc.lookup(target, CS) is not None  # recorded after the rename
    apply_attrs(target, 0o644, None, (st.st_dev, st.st_ino))
    sc.settle(target)
    assert sc.lookup(target, CS) == (entry.digest, entry.chunks)
    before = target.stat()
    with open(target, "r+b") as f:
        f.write(b"X")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert sc.lookup(target, CS) is None  # size and mtime kept, ctime moved: stale
