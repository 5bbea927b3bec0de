"""One contract suite for ``authserver.keys.store.KeyStore``, run against every implementation.

:class:`KeyStoreContract` holds the tests; each subclass supplies a ``harness`` fixture for
one implementation (memory, a directory, SQLite and PostgreSQL through ``db_url``). The SQL
store works inside the caller's unit of work, so every operation here runs in
``harness.uow()`` (a no-op for the other stores), each in its own transaction unless a test
says otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from sqlalchemy import text

from authserver.errors import NotFound
from authserver.keys import crypto
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.store import KeyStore
from authserver.storage.files.keys import FileKeyStore
from authserver.storage.memory import InMemoryKeyStore
from authserver.storage.sql.engine import Database
from authserver.storage.sql.keys import SqlKeyStore
from tests.integration.contracts.harness import StoreHarness

T0 = 1_700_000_000.123456


class Harness(StoreHarness[KeyStore]):
    def listed(self) -> dict[str, SigningKey]:
        return {k.kid: k for k in self.run(lambda s: s.list())}

    def version(self) -> str:
        return str(self.run(lambda s: s.version()))


@pytest.fixture(scope="module")
def rsa_keys() -> list[tuple[RSAKey, Kid]]:
    """Two real keys for the module (generation is slow)."""
    return [crypto.generate(2048) for _ in range(2)]


@pytest.fixture
def make_key(rsa_keys: list[tuple[RSAKey, Kid]]) -> Callable[..., SigningKey]:
    """A SigningKey with real key material; ``n`` picks a distinct kid."""

    def make(n: int = 0, *, passphrase: str | None = None, **changes: Any) -> SigningKey:
        rsa, kid = rsa_keys[n % len(rsa_keys)]
        if n >= len(rsa_keys):
            kid = Kid(f"{kid[:30]}-{n}")
        key = SigningKey(
            kid=kid,
            private_pem=crypto.to_pem(rsa, passphrase),
            public_jwk=crypto.public_jwk(rsa, kid),
            created_at=T0 + n,
            activate_at=T0 + n + 3600.5,
            deactivate_at=None,
            retired_at=None,
        )
        return dataclasses.replace(key, **changes)

    return make


class KeyStoreContract:
    """What every KeyStore promises (keys/store.py)."""

    def test_empty(self, harness: Harness) -> None:
        assert harness.run(lambda s: s.list()) == []

    def test_add_and_list_preserve_every_field(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        a = make_key(0)
        b = make_key(
            1,
            passphrase="pass phrase",
            deactivate_at=T0 + 90000.25,
            retired_at=T0 + 100.75,
            alg="RS256",
            retention=86700.5,
        )
        harness.run(lambda s: s.add(a))
        harness.run(lambda s: s.add(b))
        listed = harness.listed()
        assert set(listed) == {a.kid, b.kid}
        assert listed[a.kid] == a
        assert listed[b.kid] == b
        assert isinstance(listed[a.kid].private_pem, bytes)
        pem_b = listed[b.kid].private_pem
        assert pem_b is not None
        assert crypto.is_encrypted(pem_b)

    def test_key_without_private_half_round_trips(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        gone = make_key(0, private_pem=None, deactivate_at=T0 + 5, retired_at=T0 + 5)
        harness.run(lambda s: s.add(gone))
        assert harness.listed() == {gone.kid: gone}

    def test_update_replaces_every_mutable_field(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        key = make_key(0)
        other = make_key(1)
        harness.run(lambda s: s.add(key))
        harness.run(lambda s: s.add(other))
        changed = dataclasses.replace(
            key,
            created_at=key.created_at - 1.5,
            activate_at=key.activate_at - 100.125,
            deactivate_at=T0 + 86400.0625,
            retired_at=T0 + 42.5,
            public_jwk={**key.public_jwk, "use": "sig"},
            retention=172800.25,
        )
        harness.run(lambda s: s.update(changed))
        listed = harness.listed()
        assert listed[key.kid] == changed
        assert listed[other.kid] == other  # untouched
        # Back to "not scheduled": None values are stored as None, not dropped.
        reset = dataclasses.replace(changed, deactivate_at=None, retired_at=None, retention=None)
        harness.run(lambda s: s.update(reset))
        assert harness.listed()[key.kid] == reset

    def test_update_destroys_the_private_half(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        key = make_key(0)
        harness.run(lambda s: s.add(key))
        destroyed = dataclasses.replace(key, private_pem=None, retired_at=T0 + 7)
        harness.run(lambda s: s.update(destroyed))
        assert harness.listed()[key.kid] == destroyed

    def test_update_replaces_the_private_pem(
        self, harness: Harness, make_key: Callable[..., SigningKey], rsa_keys: Any
    ) -> None:
        # "Replace the stored key with the same kid" (KeyStore.update): e.g. re-encrypting
        # the key at rest under a new AUTHSERVER_KEY_PASSPHRASE.
        key = make_key(0)
        harness.run(lambda s: s.add(key))
        rsa, _kid = rsa_keys[0]
        reencrypted = dataclasses.replace(key, private_pem=crypto.to_pem(rsa, "new passphrase"))
        assert reencrypted.private_pem != key.private_pem
        harness.run(lambda s: s.update(reencrypted))
        assert harness.listed()[key.kid] == reencrypted

    def test_update_unknown_is_not_found(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        with pytest.raises(NotFound):
            harness.run(lambda s: s.update(make_key(0)))
        assert harness.run(lambda s: s.list()) == []

    def test_delete(self, harness: Harness, make_key: Callable[..., SigningKey]) -> None:
        a, b = make_key(0), make_key(1)
        harness.run(lambda s: s.add(a))
        harness.run(lambda s: s.add(b))
        harness.run(lambda s: s.delete(a.kid))
        assert harness.listed() == {b.kid: b}
        harness.run(lambda s: s.delete(b.kid))
        assert harness.run(lambda s: s.list()) == []

    def test_delete_unknown_is_harmless(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        a = make_key(0)
        harness.run(lambda s: s.add(a))
        harness.run(lambda s: s.delete(Kid("no-such-kid")))
        assert harness.listed() == {a.kid: a}

    def test_many_keys(self, harness: Harness, make_key: Callable[..., SigningKey]) -> None:
        keys = [make_key(n) for n in range(8)]
        for key in keys:

            def add(s: KeyStore, key: SigningKey = key) -> None:
                s.add(key)

            harness.run(add)
        assert harness.listed() == {k.kid: k for k in keys}

    def test_version_changes_after_each_locked_write(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        """The KeyService pattern: each change under lock(), in its own unit of work."""
        a, b = make_key(0), make_key(1)
        seen = [harness.version()]

        def locked(action: Callable[[KeyStore], None]) -> None:
            def run(s: KeyStore) -> None:
                with s.lock():
                    action(s)

            harness.run(run)
            seen.append(harness.version())

        locked(lambda s: s.add(a))
        locked(lambda s: s.add(b))
        locked(lambda s: s.update(dataclasses.replace(a, deactivate_at=T0 + 10)))
        locked(lambda s: s.update(dataclasses.replace(a, private_pem=None)))
        locked(lambda s: s.delete(b.kid))
        for before, after in itertools.pairwise(seen):
            assert before != after, seen
        # Reading changes nothing.
        harness.listed()
        assert harness.version() == seen[-1]

    def test_version_changes_after_each_write(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        """KeyStore.version: "changes whenever the key set changes" (not only under lock)."""
        a, b = make_key(0), make_key(1)
        seen = [harness.version()]
        for action in (
            lambda s: s.add(a),
            lambda s: s.add(b),
            lambda s: s.update(dataclasses.replace(a, deactivate_at=T0 + 10)),
            lambda s: s.delete(b.kid),
        ):
            harness.run(action)
            seen.append(harness.version())
        for before, after in itertools.pairwise(seen):
            assert before != after, seen

    def test_version_is_stable_without_writes(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        harness.run(lambda s: s.add(make_key(0)))
        first = harness.version()
        assert harness.version() == first
        assert isinstance(first, str)

    def inject_bad_records(self, harness: Harness) -> set[str]:
        """Store records that cannot be read, the way this store can hold them (a file
        edited by hand, a row written by another tool); returns the names ``scan``
        must report. A store that cannot hold a bad record returns nothing."""
        return set()

    def test_unreadable_records_are_skipped_and_reported_by_name(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        a, b = make_key(0), make_key(1)
        harness.run(lambda s: s.add(a))
        bad = self.inject_bad_records(harness)
        scan = harness.run(lambda s: s.scan())
        assert {k.kid: k for k in scan.records} == {a.kid: a}
        assert {r.name for r in scan.unreadable} == bad
        assert all(r.reason for r in scan.unreadable)
        assert harness.listed() == {a.kid: a}
        # The store keeps working around them.

        def add_locked(s: KeyStore) -> None:
            with s.lock():
                s.add(b)

        harness.run(add_locked)
        assert harness.listed() == {a.kid: a, b.kid: b}

    def test_lock_is_reenterable_sequentially(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        a, b, c = make_key(0), make_key(1), make_key(2)

        def twice_in_one_unit(s: KeyStore) -> None:
            with s.lock():
                s.add(a)
            with s.lock():
                assert {k.kid for k in s.list()} == {a.kid}
                s.add(b)

        harness.run(twice_in_one_unit)

        def take_and_release(s: KeyStore) -> None:
            with s.lock():
                pass

        for _ in range(3):
            harness.run(take_and_release)
        with harness.uow(), harness.store.lock():
            harness.store.add(c)
        with harness.uow(), harness.store.lock():
            assert {k.kid for k in harness.store.list()} == {a.kid, b.kid, c.kid}

    def test_lock_is_released_when_the_body_raises(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        class Boom(Exception):
            pass

        with pytest.raises(Boom), harness.uow(), harness.store.lock():
            raise Boom
        with harness.uow(), harness.store.lock():
            harness.store.add(make_key(0))
        assert len(harness.listed()) == 1

    def test_lock_serialises_two_threads(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        """A second holder waits until the first has released (SQL: committed) and then
        sees what the first wrote."""
        first_key = make_key(0)
        holding = threading.Event()
        marks: dict[str, float] = {}
        seen: list[str] = []
        errors: list[BaseException] = []

        def first() -> None:
            try:
                with harness.uow(), harness.store.lock():
                    harness.store.add(first_key)
                    holding.set()
                    time.sleep(0.4)
                    marks["first_done"] = time.monotonic()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                holding.set()

        def second() -> None:
            try:
                assert holding.wait(10)
                with harness.uow(), harness.store.lock():
                    marks["second_in"] = time.monotonic()
                    seen.extend(k.kid for k in harness.store.list())
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "lock deadlocked"
        assert not errors, errors
        assert marks["second_in"] >= marks["first_done"]
        assert seen == [first_key.kid]

    def test_a_reader_never_sees_part_of_a_locked_change(
        self, harness: Harness, make_key: Callable[..., SigningKey]
    ) -> None:
        """KeyStore.list/scan: a change of several writes under lock() (a retire: the
        current key retired, then its successor added) is seen whole or not at all by a
        reader outside the lock, never between two writes (no current key: the token
        endpoint would answer 503)."""
        a, b = make_key(0), make_key(1)
        harness.run(lambda s: s.add(a))
        retired = dataclasses.replace(a, retired_at=T0 + 5, private_pem=None)
        between = threading.Event()
        done = threading.Event()
        seen: list[dict[str, SigningKey]] = []
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                with harness.uow(), harness.store.lock():
                    harness.store.update(retired)
                    between.set()
                    time.sleep(0.4)
                    harness.store.add(b)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                between.set()
                done.set()

        def reader() -> None:
            try:
                assert between.wait(10)
                while not done.is_set():
                    seen.append(harness.listed())
                    time.sleep(0.02)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "lock deadlocked"
        assert not errors, errors
        assert seen
        whole = ({a.kid: a}, {a.kid: retired, b.kid: b})
        assert [s for s in seen if s not in whole] == []
        assert harness.listed() == whole[1]


# -- implementations -----------------------------------------------------------------------------


class TestInMemoryKeyStore(KeyStoreContract):
    @pytest.fixture
    def harness(self) -> Harness:
        return Harness(InMemoryKeyStore(), nullcontext)


class TestFileKeyStore(KeyStoreContract):
    @pytest.fixture
    def keys_dir(self, tmp_path: Path) -> Path:
        return tmp_path / "keys"

    @pytest.fixture
    def harness(self, keys_dir: Path) -> Harness:
        return Harness(FileKeyStore(keys_dir), nullcontext)

    def inject_bad_records(self, harness: Harness) -> set[str]:
        assert isinstance(harness.store, FileKeyStore)
        directory = harness.store.directory
        (directory / "empty.json").write_text("{}")
        (directory / "broken.json").write_text('{"kid": "broken", ')
        (directory / "binary.json").write_bytes(b"\xff\xfe\x00")
        (directory / "list.json").write_text("[1, 2]")
        (directory / "other.json").write_text('{"kid": "not-other"}')
        leaky = {
            "kid": "leaky",
            "public_jwk": {"kty": "RSA", "kid": "leaky", "n": "x", "e": "AQAB", "d": "y"},
            "created_at": T0,
            "activate_at": T0,
        }
        (directory / "leaky.json").write_text(json.dumps(leaky))
        (directory / "late.json").write_text(
            json.dumps({**leaky, "kid": "late", "public_jwk": {}, "activate_at": "soon"})
        )
        # Beyond what the clock functions represent (keys list failed on it).
        far_jwk = {"kty": "RSA", "kid": "far", "n": "x", "e": "AQAB"}
        (directory / "far.json").write_text(
            json.dumps({**leaky, "kid": "far", "public_jwk": far_jwk, "activate_at": 1e23})
        )
        return {
            "far.json",
            "empty.json",
            "broken.json",
            "binary.json",
            "list.json",
            "other.json",
            "leaky.json",
            "late.json",
        }

    def test_private_key_file_is_0600_and_no_temp_files_remain(
        self, harness: Harness, keys_dir: Path, make_key: Callable[..., SigningKey]
    ) -> None:
        old_umask = os.umask(0)  # the store must not rely on a strict umask
        try:
            a, b = make_key(0), make_key(1)
            harness.run(lambda s: s.add(a))
            harness.run(lambda s: s.add(b))
            harness.run(lambda s: s.update(dataclasses.replace(a, deactivate_at=T0 + 1)))
            with harness.store.lock():
                harness.run(lambda s: s.update(dataclasses.replace(b, private_pem=None)))
        finally:
            os.umask(old_umask)
        pem = keys_dir / f"{a.kid}.pem"
        assert pem.read_bytes() == a.private_pem
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
        for path in keys_dir.iterdir():
            if path.suffix in (".pem", ".json"):
                assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        # b's private half was destroyed: its .pem is gone, its record stays.
        assert not (keys_dir / f"{b.kid}.pem").exists()
        assert (keys_dir / f"{b.kid}.json").exists()
        leftovers = [p.name for p in keys_dir.iterdir() if p.name.endswith(".tmp")]
        assert leftovers == []
        names = {p.name for p in keys_dir.iterdir()}
        assert names <= {f"{a.kid}.pem", f"{a.kid}.json", f"{b.kid}.json", ".lock", ".version"}

    def test_directory_is_private(
        self, harness: Harness, keys_dir: Path, make_key: Callable[..., SigningKey]
    ) -> None:
        # Made by the first write, not by the store: a command that writes no key (clients
        # create, a refused keys rotate) left an empty key directory behind.
        assert not keys_dir.exists()
        harness.run(lambda s: s.add(make_key(0)))
        assert stat.S_IMODE(keys_dir.stat().st_mode) & 0o077 == 0

    def test_delete_removes_both_files(
        self, harness: Harness, keys_dir: Path, make_key: Callable[..., SigningKey]
    ) -> None:
        a = make_key(0)
        harness.run(lambda s: s.add(a))
        harness.run(lambda s: s.delete(a.kid))
        assert not (keys_dir / f"{a.kid}.pem").exists()
        assert not (keys_dir / f"{a.kid}.json").exists()

    def test_a_second_store_on_the_same_directory_sees_the_keys(
        self, harness: Harness, keys_dir: Path, make_key: Callable[..., SigningKey]
    ) -> None:
        a = make_key(0, passphrase="pp")
        harness.run(lambda s: s.add(a))
        other = FileKeyStore(keys_dir)
        assert other.list() == [a]
        assert other.version() == harness.store.version()


class TestSqlKeyStore(KeyStoreContract):
    @pytest.fixture
    def harness(self, database: Database) -> Harness:
        return Harness(SqlKeyStore(database), database.unit_of_work)

    def inject_bad_records(self, harness: Harness) -> set[str]:
        assert isinstance(harness.store, SqlKeyStore)
        database = harness.store._db
        rows = {
            "empty": "{}",
            "string": '"a string"',
            "leaky": json.dumps({"kty": "RSA", "kid": "leaky", "n": "x", "e": "AQAB", "d": "y"}),
        }
        if database.engine.dialect.name == "sqlite":
            rows["not-json"] = '{"kty": '  # PostgreSQL's json type refuses it on insert
        insert = text(
            "INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, created_at, "
            "activate_at) VALUES (:kid, 'RS256', NULL, :jwk, :t, :t)"
        )
        if database.engine.dialect.name == "postgresql":
            insert = text(insert.text.replace(":jwk", "CAST(:jwk AS json)"))
        far = json.dumps({"kty": "RSA", "kid": "far", "n": "x", "e": "AQAB"})
        with database.unit_of_work():
            conn = database.connection()
            for kid, jwk in rows.items():
                conn.execute(insert, {"kid": kid, "jwk": jwk, "t": T0})
            # Beyond what the clock functions represent (keys list failed on it).
            conn.execute(insert, {"kid": "far", "jwk": far, "t": 1e23})
        return {f"signing_keys row {kid!r}" for kid in [*rows, "far"]}

    def test_lock_waits_for_the_first_unit_of_work_to_commit(
        self, database: Database, make_key: Callable[..., SigningKey]
    ) -> None:
        """The SQL lock is held until the surrounding transaction ends, not until the
        ``with lock()`` block exits: the second taker must not see a half-done change."""
        store = SqlKeyStore(database)
        a = make_key(0)
        holding = threading.Event()
        marks: dict[str, float] = {}
        seen: list[str] = []
        errors: list[BaseException] = []

        def first() -> None:
            try:
                with database.unit_of_work():
                    with store.lock():
                        store.add(a)
                    holding.set()  # lock block left, transaction still open
                    time.sleep(0.4)
                    marks["commit_starts"] = time.monotonic()
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)
                holding.set()

        def second() -> None:
            try:
                assert holding.wait(10)
                with database.unit_of_work(), store.lock():
                    marks["second_in"] = time.monotonic()
                    seen.extend(k.kid for k in store.list())
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        assert marks["second_in"] >= marks["commit_starts"]
        assert seen == [a.kid]

    def test_rolled_back_unit_of_work_leaves_no_key(
        self, harness: Harness, database: Database, make_key: Callable[..., SigningKey]
    ) -> None:
        store = SqlKeyStore(database)

        class Boom(Exception):
            pass

        def add_then_fail() -> None:
            with database.unit_of_work(), store.lock():
                store.add(make_key(0))
                raise Boom

        with pytest.raises(Boom):
            add_then_fail()
        assert harness.run(lambda s: s.list()) == []

    def test_operations_outside_a_unit_of_work_are_refused(self, database: Database) -> None:
        with pytest.raises(RuntimeError, match="unit of work"):
            SqlKeyStore(database).list()
