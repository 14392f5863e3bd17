"""This home's keypair on disk (director.trust.keystore)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from director.errors import KeyFileError
from director.trust import keystore
from director.trust.keyfmt import fingerprint, key_to_z85
from director.trust.keystore import PUBLIC_FILE, SECRET_FILE


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_generate_gives_a_matching_keypair() -> None:
    pair = keystore.generate()
    assert len(pair.public) == len(pair.secret) == 32
    assert bytes(PrivateKey(pair.secret).public_key) == pair.public
    assert pair.public_z85 == key_to_z85(pair.public)
    assert pair.fingerprint == fingerprint(pair.public)
    assert keystore.generate().secret != pair.secret


def test_save_writes_0600_secret_in_0700_dir_and_load_reads_it(home: Path) -> None:
    pair = keystore.generate()
    assert keystore.save(home, pair) is None
    kdir = home / "keys"
    assert _mode(kdir) == 0o700
    assert _mode(kdir / SECRET_FILE) == 0o600
    assert (kdir / SECRET_FILE).read_text().strip() == pair.secret_z85
    assert (kdir / PUBLIC_FILE).read_text().strip() == pair.public_z85
    assert not [p for p in kdir.iterdir() if p.name.endswith(".tmp")]  # no temp left
    assert keystore.load(home) == pair


def test_save_tightens_an_existing_loose_keys_dir(home: Path) -> None:
    (home / "keys").mkdir(parents=True, mode=0o755)
    os.chmod(home / "keys", 0o755)
    keystore.save(home, keystore.generate())
    assert _mode(home / "keys") == 0o700


def test_secret_is_0600_even_with_a_permissive_umask(home: Path) -> None:
    old = os.umask(0)
    try:
        keystore.save(home, keystore.generate())
    finally:
        os.umask(old)
    assert _mode(home / "keys" / SECRET_FILE) == 0o600
    assert _mode(home / "keys") == 0o700


def test_refuses_overwrite_without_force(home: Path) -> None:
    first = keystore.generate()
    keystore.save(home, first)
    with pytest.raises(KeyFileError, match="--force"):
        keystore.save(home, keystore.generate())
    assert keystore.load(home) == first  # untouched


def test_force_replaces_and_keeps_a_backup(home: Path) -> None:
    first, second = keystore.generate(), keystore.generate()
    keystore.save(home, first)
    backup = keystore.save(home, second, force=True)
    assert backup is not None and backup.is_dir()
    assert backup.parent == home / "keys"
    assert _mode(backup) == 0o700
    assert (backup / SECRET_FILE).read_text().strip() == first.secret_z85
    assert _mode(backup / SECRET_FILE) == 0o600
    assert (backup / PUBLIC_FILE).read_text().strip() == first.public_z85
    assert keystore.load(home) == second


def test_load_without_key_says_what_to_do(home: Path) -> None:
    with pytest.raises(KeyFileError, match="keygen"):
        keystore.load(home)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o601, 0o610])
def test_load_refuses_a_secret_others_can_access(home: Path, mode: int) -> None:
    keystore.save(home, keystore.generate())
    secret = home / "keys" / SECRET_FILE
    os.chmod(secret, mode)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        keystore.load(home)
    assert f"{mode:04o}" in str(info.value)


def test_load_accepts_a_stricter_secret(home: Path) -> None:
    pair = keystore.generate()
    keystore.save(home, pair)
    os.chmod(home / "keys" / SECRET_FILE, 0o400)
    assert keystore.load(home) == pair


def test_load_refuses_a_symlinked_secret(home: Path, tmp_path: Path) -> None:
    pair = keystore.generate()
    keystore.save(home, pair)
    secret = home / "keys" / SECRET_FILE
    real = tmp_path / "elsewhere"
    os.replace(secret, real)
    os.chmod(real, 0o600)
    secret.symlink_to(real)
    with pytest.raises(KeyFileError, match="symlink"):
        keystore.load(home)
    with pytest.raises(KeyFileError, match="symlink"):
        keystore.load_or_create(home)  # never silently replaced either
    assert secret.is_symlink()


def test_load_refuses_a_secret_that_is_not_a_file(home: Path) -> None:
    keystore.ensure_private_dir(home / "keys")
    (home / "keys" / SECRET_FILE).mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="regular file"):
        keystore.load(home)


def test_load_refuses_a_mismatching_public_file(home: Path) -> None:
    keystore.save(home, keystore.generate())
    (home / "keys" / PUBLIC_FILE).write_text(keystore.generate().public_z85 + "\n")
    with pytest.raises(KeyFileError, match="does not match"):
        keystore.load(home)


def test_load_refuses_a_damaged_public_file(home: Path) -> None:
    keystore.save(home, keystore.generate())
    (home / "keys" / PUBLIC_FILE).write_text("garbage\n")
    with pytest.raises(KeyFileError, match="does not match"):
        keystore.load(home)


def test_load_works_without_a_public_file(home: Path) -> None:
    pair = keystore.generate()
    keystore.save(home, pair)
    (home / "keys" / PUBLIC_FILE).unlink()
    assert keystore.load(home) == pair


@pytest.mark.parametrize("content", ["", "short\n", "x" * 40 + "\n", "\xff" * 40])
def test_load_refuses_a_malformed_secret_without_echoing_it(home: Path, content: str) -> None:
    keystore.save(home, keystore.generate())
    secret = home / "keys" / SECRET_FILE
    secret.write_text(content)
    os.chmod(secret, 0o600)
    with pytest.raises(KeyFileError) as info:
        keystore.load(home)
    if content.strip():
        assert content.strip() not in str(info.value)


def test_load_or_create_creates_once(home: Path) -> None:
    pair, created = keystore.load_or_create(home)
    assert created
    again, created_again = keystore.load_or_create(home)
    assert not created_again and again == pair


def test_repr_and_str_never_show_the_secret() -> None:
    pair = keystore.generate()
    for text in (repr(pair), str(pair), f"{pair}", repr([pair]), repr({"k": pair})):
        assert pair.secret_z85 not in text
        assert pair.secret.hex() not in text
        assert repr(pair.secret) not in text
        assert pair.public_z85 in text


def test_ensure_private_dir_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(KeyFileError, match="symlink"):
        keystore.ensure_private_dir(link)


def test_write_private_file_refuses_to_follow_or_leave_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    keystore.write_private_file(target, b"data")
    assert target.read_bytes() == b"data" and _mode(target) == 0o600
    keystore.write_private_file(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new" and _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
