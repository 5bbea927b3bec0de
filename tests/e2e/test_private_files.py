"""What ``authserver serve`` leaves on disk is for its owner only, and a key store without a
passphrase is announced loudly, through a real server process under a permissive umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess
from tests.helpers import run_cli_here

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The umask many systems give a service (022): world-readable by default."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.parametrize("key_store", ["file", "sql"])
def test_database_and_key_directory_are_owner_only_and_plaintext_keys_are_announced(
    tmp_path: Path, key_store: str
) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o755)  # as a checkout's keys/ or a directory made by hand
    os.chmod(keys_dir, 0o755)  # noqa: S103 - the permissive mode is what is tested
    # A file restored from a backup with the umask's mode, as a key file could be.
    restored = keys_dir / "restored-from-backup.txt"
    restored.write_text("as restored")
    os.chmod(restored, 0o644)
    database = tmp_path / "authserver.db"
    log = tmp_path / "serve.log"
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{database}",
        "AUTHSERVER_KEYS_DIR": str(keys_dir),
        "AUTHSERVER_KEY_STORE": key_store,
    }
    with ServerProcess(env, log_path=log):
        assert _mode(database) == 0o600
        for sidecar in (tmp_path / "authserver.db-wal", tmp_path / "authserver.db-shm"):
            if sidecar.exists():
                assert _mode(sidecar) & 0o077 == 0, sidecar
        if key_store == "file":
            assert _mode(keys_dir) == 0o700
            for path in keys_dir.iterdir():
                assert _mode(path) & 0o077 == 0, path
    warnings = [line for line in log.read_text().splitlines() if "UNENCRYPTED" in line]
    assert len(warnings) == 1, log.read_text()
    assert "WARNING" in warnings[0]
    assert "AUTHSERVER_KEY_PASSPHRASE" in warnings[0]
    assert ("in the database" if key_store == "sql" else str(keys_dir)) in warnings[0]


@pytest.mark.usefixtures("permissive_umask")
def test_no_warning_with_a_passphrase(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'authserver.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        "AUTHSERVER_KEY_PASSPHRASE": "a passphrase for the private files test",
    }
    with ServerProcess(env, log_path=log):
        pass
    assert "UNENCRYPTED" not in log.read_text()


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.parametrize("command", [("keys", "rotate"), ("db", "upgrade")])
def test_a_database_file_made_before_is_narrowed_to_its_owner(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A SQLite file that existed before authserver first opened it (``touch``-ed for a
    bind mount, restored from a backup, left by an older copy with its -wal and -shm) is
    narrowed to its owner before anything is written to it, by any command: with the SQL
    key store it receives a plaintext private key."""
    database = tmp_path / "authserver.db"
    for path in (database, tmp_path / "authserver.db-wal", tmp_path / "authserver.db-shm"):
        path.touch()
        os.chmod(path, 0o666)  # noqa: S103 - the permissive mode is what is tested
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{database}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
        "AUTHSERVER_KEY_STORE": "sql",
    }
    result = run_cli_here(env, *command)
    assert result.returncode == 0, result.stderr
    assert _mode(database) == 0o600
    for sidecar in (tmp_path / "authserver.db-wal", tmp_path / "authserver.db-shm"):
        if sidecar.exists():
            assert _mode(sidecar) == 0o600, sidecar


@pytest.mark.usefixtures("permissive_umask")
def test_a_database_file_reached_through_a_link_is_left_alone(tmp_path: Path) -> None:
    """A link is not followed to narrow its target (what it points at may be shared on
    purpose; ``doctor`` reports the mode)."""
    target = tmp_path / "elsewhere.db"
    target.touch()
    os.chmod(target, 0o644)
    link = tmp_path / "authserver.db"
    link.symlink_to(target)
    env = {
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{link}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
    }
    result = run_cli_here(env, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert _mode(target) == 0o644
