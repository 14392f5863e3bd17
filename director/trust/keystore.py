"""This home's own Curve25519 keypair, kept safely on disk.

Secret files are created 0600 atomically (O_EXCL temp file + rename) inside a
0700 directory, and refused at load time when they are a symlink, owned by
someone else, or readable by group/others -- the things pyzmq's
``create_certificates`` does not guard against.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path


from director.errors import KeyFileError
from director.trust.keyfmt import fingerprint, key_to_z85, z85_to_key

log = logging.getLogger("director.keys")

PUBLIC_FILE = "node.key"
SECRET_FILE = "node.key_secret"


@dataclass(frozen=True)
class KeyPair:
    """A Curve25519 keypair; ``repr`` never shows the secret half."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public_z85!r})"

    @property
    def public_z85(self) -> str:
        return key_to_z85(self.public)

    @property
    def secret_z85(self) -> str:
        return key_to_z85(self.secret)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def generate() -> KeyPair:
    from nacl.public import PrivateKey  # here: the CLI's control path never needs nacl

    sk = PrivateKey.generate()
    return KeyPair(public=bytes(sk.public_key), secret=bytes(sk))


def keys_dir(home: str | Path) -> Path:
    return Path(home) / "keys"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700; tighten it if it exists."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"{path} must be a real directory, not a symlink")
    if st.st_uid != os.geteuid():
        raise KeyFileError(f"{path} is owned by uid {st.st_uid}, not by this user")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        os.chmod(path, 0o700)
        if mode & 0o077:  # an operator's directory made private: say so, once
            log.warning("%s had mode %04o: changed to 0700 (it holds keys and state only"
                        " this user may read)", path, mode)
    return path


def write_private_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so the file never exists with looser permissions."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def check_secret_file(path: Path) -> None:
    """Refuse a secret file that others could read or swap."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise KeyFileError(
            f"no key in {path.parent}: run 'director keygen' (or 'director enroll')"
        ) from None
    if stat.S_ISLNK(st.st_mode):
        raise KeyFileError(f"refusing secret key {path}: it is a symlink")
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"refusing secret key {path}: not a regular file")
    if st.st_uid != os.geteuid():
        raise KeyFileError(f"refusing secret key {path}: owned by uid {st.st_uid}, not this user")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"refusing secret key {path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it;"
            f" run 'chmod 600 {path}'"
        )


def save(home: str | Path, pair: KeyPair, *, force: bool = False) -> Path | None:
    """Write the keypair; with ``force`` keep a timestamped backup. Returns the backup."""
    kdir = ensure_private_dir(keys_dir(home))
    secret_path, public_path = kdir / SECRET_FILE, kdir / PUBLIC_FILE
    backup = None
    if secret_path.exists() or public_path.exists():
        if not force:
            raise KeyFileError(
                f"{kdir} already holds a keypair; use --force to replace it (a backup is kept)"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = ensure_private_dir(kdir / f"backup-{stamp}-{os.getpid()}")
        for p in (secret_path, public_path):
            if p.exists():
                os.replace(p, backup / p.name)
    write_private_file(secret_path, (pair.secret_z85 + "\n").encode())
    write_private_file(public_path, (pair.public_z85 + "\n").encode(), mode=0o644)
    return backup


def load(home: str | Path) -> KeyPair:
    """Load and check this home's keypair."""
    kdir = keys_dir(home)
    secret_path = kdir / SECRET_FILE
    check_secret_file(secret_path)
    try:
        secret = z85_to_key(secret_path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read secret key {secret_path}: {type(exc).__name__}") from None
    except KeyFileError:
        raise KeyFileError(f"secret key {secret_path} is malformed") from None
    from nacl.public import PrivateKey

    public = bytes(PrivateKey(secret).public_key)
    public_path = kdir / PUBLIC_FILE
    if public_path.exists():
        try:
            stored = z85_to_key(public_path.read_text().strip())
        except Exception:  # noqa: BLE001 - any damage to the public file is reported the same way
            stored = b""
        if stored != public:
            raise KeyFileError(f"{public_path} does not match the secret key next to it")
    return KeyPair(public=public, secret=secret)


def load_or_create(home: str | Path) -> tuple[KeyPair, bool]:
    """Load the keypair, creating one first if there is none. Returns (pair, created)."""
    if (keys_dir(home) / SECRET_FILE).exists() or os.path.islink(keys_dir(home) / SECRET_FILE):
        return load(home), False
    pair = generate()
    save(home, pair)
    return pair, True
