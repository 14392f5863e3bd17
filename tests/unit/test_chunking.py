"""Server-side transfer blocks: manifests, digests, COPY source semantics, chunk serving."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.errors import ProtocolError, TransferError
from director.transfer import chunking
from director.transfer.chunking import (
    DigestCache, FileEntry, Manifest, build_manifest, digest_of, hash_file, read_chunk,
    vouched_chunks,
)

CS = 4096


def ref(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def build(tmp_path: Path, sources, dest, cache=None):
    return build_manifest(sources, dest, base=tmp_path / "src", chunk_size=CS,
                          cache=DigestCache() if cache is None else cache)


def sample_manifest() -> Manifest:
    data = os.urandom(CS + 10)
    entry = FileEntry("etc/app.conf", len(data), 0o640, ref(data),
                      (ref(data[:CS]), ref(data[CS:])))
    empty = FileEntry("empty", 0, 0o600, ref(b""), ())
    return Manifest("/opt/app", CS, (entry, empty), ("var/log",))


# --- digests ---------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS])
def test_hash_file_matches_reference(tmp_path, size):
    data = os.urandom(size)
    path = write(tmp_path / "f", data)
    digest, chunks = hash_file(path, CS)
    assert digest == ref(data) == digest_of(data)
    assert chunks == tuple(ref(data[i:i + CS]) for i in range(0, size, CS))
    assert len(chunks) == -(-size // CS)


def test_hash_file_refuses_symlink(tmp_path):
    write(tmp_path / "real", b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(TransferError):
        hash_file(tmp_path / "link", CS)


# --- manifest round trip and hostile input ---------------------------------------

def test_manifest_round_trip_and_digest():
    m = sample_manifest()
    again = Manifest.from_dict(m.to_dict())
    assert again == m
    assert again.digest() == m.digest()
    assert m.bytes_total == CS + 10
    changed = Manifest(m.dest, m.chunk_size, m.files[:1], m.dirs)
    assert changed.digest() != m.digest()


@pytest.mark.parametrize("mutate", [
    lambda d: d.update(extra=1),
    lambda d: d.update(chunk_size=1024),
    lambda d: d.update(chunk_size=True),
    lambda d: d.update(chunk_size=128 * 1024 * 1024),
    lambda d: d.update(dest=""),
    lambda d: d.update(dest="/a\x00b"),
    lambda d: d.update(files="nope"),
    lambda d: d["files"][0].update(rel="/etc/passwd"),
    lambda d: d["files"][0].update(rel="../escape"),
    lambda d: d["files"][0].update(rel="a/../../b"),
    lambda d: d["files"][0].update(rel="a//b"),
    lambda d: d["files"][0].update(rel="a/./b"),
    lambda d: d["files"][0].update(rel="a/"),
    lambda d: d["files"][0].update(rel="a\x00b"),
    lambda d: d["files"][0].update(rel="\ud800"),
    lambda d: d["files"][0].update(digest="zz" * 32),
    lambda d: d["files"][0].update(digest="AB" * 32),
    lambda d: d["files"][0].update(size=-1),
    lambda d: d["files"][0].update(size=CS * 5),  # chunk count no longer matches
    lambda d: d["files"][0].update(mode=0o10000),
    lambda d: d["files"][0]["chunks"].append("0" * 64),
    lambda d: d["files"][0]["chunks"].__setitem__(0, 5),
    lambda d: d["files"].append(dict(d["files"][0])),  # duplicate path
    lambda d: d["files"][1].update(rel="etc/app.conf/inner"),  # file used as a directory
    lambda d: d["files"][1].update(rel=""),  # DEST both file and directory
    lambda d: d["dirs"].append("etc/app.conf"),
    lambda d: d["dirs"].append(".."),
    lambda d: d.update(files=[d["files"][0]] * (chunking.MAX_FILES + 1)),
])
def test_from_dict_refuses_hostile_input(mutate):
    raw = sample_manifest().to_dict()
    mutate(raw)
    with pytest.raises(ProtocolError):
        Manifest.from_dict(raw)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_json)
def test_from_dict_arbitrary_json_only_protocol_error(raw):
    try:
        Manifest.from_dict(raw)
    except ProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["dest", "chunk_size", "files", "dirs"]), _json,
       st.sampled_from(["rel", "size", "mode", "digest", "chunks"]), _json)
def test_from_dict_mutated_fields_only_protocol_error(top, top_value, field, field_value):
    for raw in (sample_manifest().to_dict(), sample_manifest().to_dict()):
        raw[top] = top_value
        try:
            Manifest.from_dict(raw)
        except ProtocolError:
            pass
    raw = sample_manifest().to_dict()
    raw["files"][0][field] = field_value
    try:
        Manifest.from_dict(raw)
    except ProtocolError:
        pass


# --- COPY source semantics -------------------------------------------------------

def test_single_file_to_file_dest(tmp_path):
    write(tmp_path / "src" / "app.conf", b"hello", 0o640)
    m, paths = build(tmp_path, ["app.conf"], "/etc/app.conf")
    assert [(f.rel, f.size, f.mode, f.digest) for f in m.files] == [("", 5, 0o640, ref(b"hello"))]
    assert paths == (tmp_path / "src" / "app.conf",)
    assert m.dirs == ()


def test_single_file_to_directory_dest(tmp_path):
    write(tmp_path / "src" / "app.conf", b"hello")
    m, _ = build(tmp_path, ["app.conf"], "/etc/")
    assert [f.rel for f in m.files] == ["app.conf"]


def test_several_sources_go_under_dest(tmp_path):
    write(tmp_path / "src" / "a", b"1")
    write(tmp_path / "src" / "b", b"2")
    m, paths = build(tmp_path, ["a", str(tmp_path / "src" / "b")], "/opt")
    assert [f.rel for f in m.files] == ["a", "b"]
    assert [p.name for p in paths] == ["a", "b"]


def test_glob_with_several_matches_goes_under_dest(tmp_path):
    for name in ("x.conf", "y.conf", "z.txt"):
        write(tmp_path / "src" / name, name.encode())
    m, paths = build(tmp_path, ["*.conf"], "/etc/app")
    assert [f.rel for f in m.files] == ["x.conf", "y.conf"]
    assert all(p.suffix == ".conf" for p in paths)


def test_glob_with_one_match_is_the_file(tmp_path):
    write(tmp_path / "src" / "only.conf", b"x")
    m, _ = build(tmp_path, ["*.conf"], "/etc/app.conf")
    assert [f.rel for f in m.files] == [""]


def test_directory_contents_copied_recursively(tmp_path):
    src = tmp_path / "src" / "tree"
    write(src / "top.txt", b"t" * (CS * 2 + 1), 0o755)
    write(src / "sub" / "deep.txt", b"d")
    (src / "emptydir" / "inner").mkdir(parents=True)
    (src / "link.txt").symlink_to(src / "top.txt")
    (src / "linkdir").symlink_to(src / "sub")
    m, paths = build(tmp_path, ["tree"], "/srv/tree")
    assert [f.rel for f in m.files] == ["sub/deep.txt", "top.txt"]  # symlinks skipped
    assert m.dirs == ("emptydir/inner",)
    top = m.files[1]
    assert top.mode == 0o755 and top.size == CS * 2 + 1 and len(top.chunks) == 3
    assert paths[1] == src / "top.txt"
    assert Manifest.from_dict(m.to_dict()) == m  # the server never builds what a node refuses


def test_empty_directory_source_creates_dest(tmp_path):
    (tmp_path / "src" / "empty").mkdir(parents=True)
    m, paths = build(tmp_path, ["empty"], "/srv/x")
    assert m.files == () and paths == () and m.dirs == ("",)


def test_missing_source_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(TransferError,
                       match=r"COPY source 'nope\*' not found \(relative to .*src\)"):
        build(tmp_path, ["nope*"], "/x")
    with pytest.raises(TransferError, match="COPY source 'missing' not found"):
        build(tmp_path, ["missing"], "/x")


def test_symlink_source_refused(tmp_path):
    write(tmp_path / "src" / "real", b"x")
    (tmp_path / "src" / "link").symlink_to(tmp_path / "src" / "real")
    with pytest.raises(TransferError, match="symlink"):
        build(tmp_path, ["link"], "/x")


def test_duplicate_destination_paths_refused(tmp_path):
    write(tmp_path / "src" / "one" / "same", b"1")
    write(tmp_path / "src" / "two" / "same", b"2")
    with pytest.raises(TransferError, match="both go to"):
        build(tmp_path, ["one", "two"], "/x/")


# --- digest cache ----------------------------------------------------------------

def test_digest_cache_avoids_rereading(tmp_path, monkeypatch):
    path = write(tmp_path / "src" / "f", b"A" * 5000)
    reads = []
    from director.transfer import hashing  # where DigestCache reads files

    real = hashing.hash_file
    monkeypatch.setattr(hashing, "hash_file", lambda p, cs: reads.append(p) or real(p, cs))
    cache = DigestCache()
    first, _ = build(tmp_path, ["f"], "/f", cache)
    assert len(reads) == 1
    # Same size, restored mtime: the stat key is unchanged, so the content is not re-read.
    st = path.stat()
    path.write_bytes(b"B" * 5000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second, _ = build(tmp_path, ["f"], "/f", cache)
    assert len(reads) == 1 and second.files[0].digest == first.files[0].digest
    # A new mtime invalidates the entry: the new content is hashed.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    third, _ = build(tmp_path, ["f"], "/f", cache)
    assert len(reads) == 2 and third.files[0].digest == ref(b"B" * 5000)


def test_digest_cache_is_bounded(tmp_path):
    cache = DigestCache(maxsize=2)
    for i in range(4):
        cache.digests(write(tmp_path / f"f{i}", bytes([i])), CS)
    assert len(cache) == 2


# --- serving chunks --------------------------------------------------------------

def test_read_chunk_returns_verified_chunks(tmp_path):
    data = os.urandom(CS * 2 + 7)
    write(tmp_path / "src" / "f", data)
    m, paths = build(tmp_path, ["f"], "/f")
    entry = m.files[0]
    got = b"".join(read_chunk(paths[0], entry, i, CS) for i in range(len(entry.chunks)))
    assert got == data


@pytest.mark.parametrize("index", [-1, 3, True, "0"])
def test_read_chunk_bounds(tmp_path, index):
    write(tmp_path / "src" / "f", os.urandom(CS * 2 + 7))
    m, paths = build(tmp_path, ["f"], "/f")
    with pytest.raises(TransferError, match="out of range"):
        read_chunk(paths[0], m.files[0], index, CS)


def test_read_chunk_detects_changed_source(tmp_path):
    path = write(tmp_path / "src" / "f", b"a" * CS * 2)
    m, paths = build(tmp_path, ["f"], "/f")
    path.write_bytes(b"a" * CS + b"b" * CS)
    assert read_chunk(paths[0], m.files[0], 0, CS) == b"a" * CS
    with pytest.raises(TransferError, match="changed"):
        read_chunk(paths[0], m.files[0], 1, CS)


def test_literal_name_with_glob_characters(tmp_path):
    write(tmp_path / "src" / "file[1].txt", b"x")
    m, _ = build(tmp_path, ["file[1].txt"], "/etc/f")
    assert [f.rel for f in m.files] == [""] and m.files[0].digest == ref(b"x")


def test_vouched_chunks_spare_the_serve_side_hashing_until_the_stat_changes(tmp_path):
    """Chunks of a file whose digests the cache took under its current stat are served
    without hashing again; once the stat changes, every chunk is checked again."""
    path = write(tmp_path / "src" / "f", b"a" * CS * 2)
    cache = DigestCache()
    m, paths = build_manifest(["f"], "/f", base=tmp_path / "src", chunk_size=CS, cache=cache)
    seed = vouched_chunks(m, paths, cache)
    assert len(seed) == 2
    # Same size, same mtime, other bytes: only a stat-preserving edit could do this, and
    # the node's own per-chunk check is what catches it; the server trusts the stat.
    st = os.stat(path)
    path.write_bytes(b"a" * CS + b"b" * CS)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_chunk(paths[0], m.files[0], 1, CS, set(seed)) == b"b" * CS
    # A normal edit changes the mtime: the seed no longer applies and the change shows.
    path.write_bytes(b"a" * CS + b"c" * CS)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(TransferError, match="changed"):
        read_chunk(paths[0], m.files[0], 1, CS, set(seed))


def test_vouched_chunks_skip_files_the_cache_does_not_hold(tmp_path):
    write(tmp_path / "src" / "f", b"x" * 10)
    m, paths = build_manifest(["f"], "/f", base=tmp_path / "src", chunk_size=CS)
    assert vouched_chunks(m, paths, DigestCache()) == set()


@pytest.mark.parametrize("source", ["/proc/self/environ", "/proc/self/status", "/proc",
                                    "/sys", "/dev/null"])
def test_kernel_views_are_never_sources(tmp_path, source):
    with pytest.raises(TransferError, match="/proc, /sys or /dev"):
        build_manifest([source], "/x", base=tmp_path, chunk_size=CS)


def test_a_symlinked_directory_into_proc_is_refused_too(tmp_path):
    (tmp_path / "looks-fine").symlink_to("/proc/self")
    with pytest.raises(TransferError):
        build_manifest(["looks-fine/environ"], "/x", base=tmp_path, chunk_size=CS)


def test_chunk_errors_never_name_the_servers_paths(tmp_path):
    src = tmp_path / "secret-dir" / "f.bin"
    src.parent.mkdir()
    src.write_bytes(b"a" * (2 * CS))
    m, paths = build_manifest([str(src)], "/dst", base=tmp_path, chunk_size=CS)
    src.write_bytes(b"b" * (2 * CS))
    with pytest.raises(TransferError) as changed:
        read_chunk(paths[0], m.files[0], 1, CS)
    src.unlink()
    with pytest.raises(TransferError) as gone:
        read_chunk(paths[0], m.files[0], 0, CS)
    for exc in (changed.value, gone.value):
        assert str(tmp_path) not in str(exc) and "secret-dir" not in str(exc), exc
