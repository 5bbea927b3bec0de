"""What ``authserver serve`` leaves on disk is for its owner only, and a key store without a
passphrase is announced loudly, through a real server process under a permissive umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess

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
