"""Placing files on the node without being fooled by symlinks.

Destinations are resolved and opened one directory component at a time with
``O_NOFOLLOW``, so a symlink planted anywhere in a destination path is refused
instead of followed; modes and owners are applied to the opened file itself.
"""

from __future__ import annotations

import errno
import grp
import os
import posixpath
import pwd
import re
import stat
import time
from pathlib import Path
from typing import Iterable

from director.errors import TransferError
from director.transfer.chunking import Manifest, check_rel

TEMP_PREFIX = ".director-tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _symlink_refusal(path: str) -> TransferError:
    return TransferError(f"refusing to write through symlink at {path}")


def safe_target(dest: str, rel: str) -> Path:
    """Absolute normalized destination; refuses if any existing component is a symlink."""
    if not isinstance(dest, str) or not dest.startswith("/") or "\x00" in dest:
        raise TransferError(f"COPY destination {dest!r} must be an absolute path")
    why = check_rel(rel)
    if why:
        raise TransferError(f"bad path {rel!r} in manifest: {why}")
    path = "/" + posixpath.normpath(posixpath.join(dest, rel)).lstrip("/")
    current = ""
    for part in path.split("/")[1:]:
        current = f"{current}/{part}"
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(st.st_mode):
            raise _symlink_refusal(current)
    return Path(path)


def _open_dir(path: str, *, create: bool) -> int:
    """Open an absolute directory one component at a time, never following a symlink."""
    fd = os.open("/", _DIR_FLAGS)
    current = ""
    try:
        for part in [p for p in path.split("/") if p]:
            current = f"{current}/{part}"
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise TransferError(f"directory {current} does not exist") from None
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and stat.S_ISLNK(
                        os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _symlink_refusal(current) from None
                raise TransferError(f"cannot open directory {current}: {exc.strerror}") from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def create_dirs(manifest: Manifest) -> list[Path]:
    """Create the manifest's (empty) directories under DEST without following symlinks."""
    made = []
    for rel in manifest.dirs:
        target = safe_target(manifest.dest, rel)
        os.close(_open_dir(str(target), create=True))
        made.append(target)
    return made


def parse_owner(spec: str) -> tuple[int, int]:
    """"user[:group]" (names or numbers) -> (uid, gid); -1 leaves that part unchanged."""
    ids = []
    for kind, name in zip(("user", "group"), spec.partition(":")[::2]):
        if not name:
            ids.append(-1)
        elif re.fullmatch(r"[0-9]{1,10}", name) and int(name) < 2**32 - 1:
            ids.append(int(name))
        else:
            try:
                ids.append(pwd.getpwnam(name).pw_uid if kind == "user"
                           else grp.getgrnam(name).gr_gid)
            except KeyError:
                raise TransferError(f"unknown {kind} {name!r} on this node") from None
    if ids == [-1, -1]:
        raise TransferError(f"bad owner {spec!r}: expected USER[:GROUP]")
    return ids[0], ids[1]


def apply_attrs(target: Path, mode: int | None, chown: str | None,
                expect: tuple[int, int] | None = None) -> None:
    """Set mode and owner of ``target`` (file or directory) without following symlinks,
    through the descriptor opened and checked: never a file with a second name (a hard
    link someone made to an outside file), and, given ``expect`` (device, inode), only
    the file that was placed."""
    owner = parse_owner(chown) if chown else None
    parent, name = os.path.split(os.fspath(target))
    dfd = _open_dir(parent or "/", create=False)
    try:
        try:
            fd = os.open(name or ".", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _symlink_refusal(os.fspath(target)) from None
            raise TransferError(f"cannot open {target}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and (
                    st.st_nlink > 1 or (expect is not None and (st.st_dev, st.st_ino) != expect)):
                raise TransferError(
                    f"refusing to change owner or mode of {target}: it is not the file this"
                    " COPY placed (replaced, or hard-linked to another file)")
            chowned = owner is not None and (owner[0] not in (-1, st.st_uid)
                                             or owner[1] not in (-1, st.st_gid))
            if chowned:
                os.fchown(fd, *owner)  # before chmod: chown may clear setuid bits
            # Unchanged mode is left alone (no ctime churn on every redeploy).
            if mode is not None and (chowned or stat.S_IMODE(st.st_mode) != mode):
                os.fchmod(fd, mode)
        except PermissionError:
            raise TransferError(f"not permitted to change owner or mode of {target}") from None
        except OSError as exc:
            raise TransferError(f"cannot set attributes of {target}: {exc.strerror}") from None
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def cleanup_temp_files(roots: Iterable[Path], *, min_age: float = 0.0) -> int:
    """Remove ``.director-tmp-*`` files (older than ``min_age`` s) left by interrupted writes."""
    removed = 0
    for path in (p for root in roots for p in Path(root).glob(TEMP_PREFIX + "*")):
        try:
            st = path.lstat()
            if not stat.S_ISDIR(st.st_mode) and time.time() - st.st_mtime >= min_age:
                path.unlink()
                removed += 1
        except OSError:
            pass
    return removed
