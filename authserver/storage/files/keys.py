"""FileKeyStore: signing keys in a directory (``AUTHSERVER_KEYS_DIR``), the default.

Layout::

    keys/
      .lock            flock(2) target serialising every change across processes
      .version         changes on every change; caches compare it; "changing ..." while
                       a change is being written (see "Atomic changes" below)
      <kid>.pem        PKCS#8 private key, mode 0600, encrypted when a passphrase is set
      <kid>.json       lifecycle timestamps and the public JWK

Every file is written to a temporary name, fsynced and renamed over the old one
(``os.replace`` is atomic on POSIX), so a crash leaves either the old or the new content,
never half a file. A key without its ``.json`` (crash between the two writes) was never
published and is ignored; a ``.json`` whose ``.pem`` is gone is a key whose private half was
destroyed. A ``.json`` that cannot be read (not JSON, fields missing or of the wrong type,
edited by hand) is skipped and reported by :meth:`FileKeyStore.scan`, never an error for
the whole store.

Atomic changes: one change of the key set (a retire: the retired key, then its successor
created or promoted, then the windows rechained) is several file writes, and a reader
between two of them would see a key set that is no state of the lifecycle (no current
key, so ``POST /token`` would answer 503). The first write under :meth:`FileKeyStore.lock`
first sets ``.version`` to a ``changing`` marker, and releasing the lock sets a new
version. :meth:`FileKeyStore.scan` reads without any lock while ``.version`` is a plain
version and has not moved during the read (the hot path's case); otherwise it waits for
the writer under a shared ``flock`` on ``.lock`` and reads what the change left. A marker
left by a writer killed mid-change is harmless: the shared lock is then free at once, and
the read sees the crash state that the next tick repairs. Readers take the shared lock
only while a change is marked (being written, or left by such a crash until the next
change), so on the hot path a writer never waits for them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Hashable
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from authserver.errors import ConfigError
from authserver.errors import KeyStoreError
from authserver.errors import not_found
from authserver.keys.model import Kid
from authserver.keys.model import SigningKey
from authserver.keys.model import check_stored
from authserver.records import Scan
from authserver.records import UnreadableRecord

#: How long after ``.version`` was written its ``stat`` is trusted to tell versions apart
#: (:meth:`FileKeyStore.stamp`): several ticks of the kernel's coarse clock, which file
#: times come from.
SETTLED_NS = 50_000_000
#: The prefix of ``.version`` while a change is being written under the lock.
CHANGING = "changing "


class _Holds(threading.local):
    """Per thread: the key directories whose lock this thread holds, each with whether
    the change under it has written its ``changing`` marker yet. A read by the holder
    itself must not wait for the shared lock (its own exclusive lock would block it)."""

    def __init__(self) -> None:
        self.marked: dict[str, bool] = {}


_holds = _Holds()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or widened O_CREAT's mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private(directory: Path) -> None:
    """Narrow the key directory and the files in it to their owner (0700, 0600).
    ``mkdir(mode=0o700)`` and the store's own writes do that for what they create, but a
    directory that already existed (a checkout's ``keys/``, created by git with the umask,
    or one made by hand) keeps its mode, which lets other users list the keys and see when
    they change, and key files restored from a backup keep theirs, which a later copy of
    the directory carries along. What another user owns, and links, are left alone."""
    for path in (directory, *directory.iterdir()):
        try:
            info = path.lstat()
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
            continue
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & 0o700)


class FileKeyStore:
    def __init__(self, directory: Path, *, create: bool = True) -> None:
        """A store over *directory*, created (mode 0700) by its first change unless
        *create* is false; a missing directory reads as holding no keys.

        Created by the first change, not here: a command that may write a key but does
        not (``clients create``, or a ``keys rotate`` refused by its checks) left an empty
        key directory behind, in the working directory by default."""
        self.directory = directory
        #: ``.version`` as a string, for :meth:`stamp` on every request (no path joining).
        self._version_file = os.fspath(directory / ".version")
        #: Which lock this is, whatever path spelling reaches it (see _Holds).
        self._lock_id = os.path.realpath(directory / ".lock")
        #: The directory is still to be made by the first change (see _make_directory).
        self._to_create = False
        if not create:
            return
        if not directory.exists():
            self._to_create = True
            return
        self._check_usable()
        _make_private(directory)

    def _check_usable(self) -> None:
        """Refuse a key directory that is there but is no directory, or is not writable."""
        if not self.directory.is_dir():
            raise ConfigError(f"AUTHSERVER_KEYS_DIR: {self.directory} is not a directory")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ConfigError(f"AUTHSERVER_KEYS_DIR: {self.directory} is not writable")

    def _make_directory(self) -> None:
        """Create the directory (mode 0700) before the first write, when this store may."""
        if not self._to_create:
            return
        if not self.directory.exists():
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"AUTHSERVER_KEYS_DIR: cannot create {self.directory}: {exc.strerror}"
                ) from None
        self._check_usable()
        self._to_create = False

    @contextmanager
    def lock(self) -> Iterator[None]:
        self._make_directory()
        try:
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            # A store that may not create its directory (a command that needs existing
            # keys, such as 'keys retire') and finds none.
            raise KeyStoreError(
                f"AUTHSERVER_KEYS_DIR: {self.directory} does not exist (no signing keys yet: "
                "'authserver serve' or 'authserver keys rotate' creates it)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _holds.marked[self._lock_id] = False
            try:
                yield
            finally:
                if _holds.marked.pop(self._lock_id):
                    self._bump()  # the change is complete: a new version ends the marker
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextmanager
    def _shared_lock(self) -> Iterator[None]:
        """Wait until no change is being written, and keep any from starting meanwhile."""
        try:
            fd = os.open(self.directory / ".lock", os.O_RDONLY)
        except FileNotFoundError:
            yield  # no writer ever locked this store
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def list(self) -> list[SigningKey]:
        return self.scan().records

    def scan(self) -> Scan[SigningKey]:
        """A key set that some complete change left (see "Atomic changes" above)."""
        if self._lock_id in _holds.marked:
            return self._scan()  # this thread is the writer: it sees its own writes
        before = self.version()
        if not before.startswith(CHANGING):
            scan = self._scan()
            if self.version() == before:
                return scan
        with self._shared_lock():
            return self._scan()

    def _scan(self) -> Scan[SigningKey]:
        keys: list[SigningKey] = []
        unreadable: list[UnreadableRecord] = []
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                keys.append(self._read(meta_path))
            except FileNotFoundError:
                continue  # deleted between glob and read
            except UnreadableRecord as exc:
                unreadable.append(exc)
        return Scan(keys, unreadable)

    def _read(self, meta_path: Path) -> SigningKey:
        """The key of one ``<kid>.json`` (and its ``.pem``).

        :raises UnreadableRecord: naming the file and what is wrong with it.
        """
        name = meta_path.name
        try:
            meta = json.loads(meta_path.read_text("utf-8"))
        except UnicodeDecodeError:
            raise UnreadableRecord(name, "not UTF-8 text") from None
        except ValueError as exc:
            raise UnreadableRecord(name, f"not JSON ({exc})") from None
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise UnreadableRecord(name, exc.strerror or type(exc).__name__) from None
        if not isinstance(meta, dict):
            raise UnreadableRecord(name, "not a JSON object")
        if meta.get("kid") != meta_path.stem:
            raise UnreadableRecord(name, "its kid is missing or does not match the file name")
        kid = Kid(meta_path.stem)
        try:
            pem: bytes | None = (self.directory / f"{kid}.pem").read_bytes()
        except FileNotFoundError:
            pem = None
        except OSError as exc:
            raise UnreadableRecord(f"{kid}.pem", exc.strerror or type(exc).__name__) from None
        try:
            return check_stored(
                SigningKey(
                    kid=kid,
                    private_pem=pem,
                    public_jwk=meta["public_jwk"],
                    created_at=meta["created_at"],
                    activate_at=meta["activate_at"],
                    deactivate_at=meta.get("deactivate_at"),
                    retired_at=meta.get("retired_at"),
                    alg=meta.get("alg", "RS256"),
                    retention=meta.get("retention"),
                )
            )
        except KeyError as exc:
            raise UnreadableRecord(name, f"{exc.args[0]} is missing") from None
        except ValueError as exc:
            raise UnreadableRecord(name, str(exc)) from None

    def _changing(self) -> None:
        """Before the first write of a change under the lock: mark ``.version`` so that
        readers wait for the whole change instead of reading part of it."""
        self._make_directory()  # a write outside the lock
        if _holds.marked.get(self._lock_id) is False:
            _write_atomic(
                self.directory / ".version", (CHANGING + secrets.token_hex(8)).encode(), 0o600
            )
            _holds.marked[self._lock_id] = True

    def _changed(self) -> None:
        """After a write: a write outside the lock is a change of its own."""
        if self._lock_id not in _holds.marked:
            self._bump()

    def _write(self, key: SigningKey) -> None:
        self._changing()
        pem_path = self.directory / f"{key.kid}.pem"
        if key.private_pem is not None:
            try:
                unchanged = pem_path.read_bytes() == key.private_pem
            except FileNotFoundError:
                unchanged = False
            if not unchanged:
                _write_atomic(pem_path, key.private_pem, 0o600)
        meta = {
            "kid": key.kid,
            "alg": key.alg,
            "public_jwk": key.public_jwk,
            "created_at": key.created_at,
            "activate_at": key.activate_at,
            "deactivate_at": key.deactivate_at,
            "retired_at": key.retired_at,
            "retention": key.retention,
        }
        # The .json is written last: a key is part of the set only once both files exist.
        _write_atomic(
            self.directory / f"{key.kid}.json", json.dumps(meta, indent=2).encode(), 0o600
        )
        if key.private_pem is None:
            # Destroyed only after the metadata says the key is retired or gone: a crash in
            # between leaves a key that signs nothing with a stale .pem (the next tick
            # removes it), never a current key without its private half.
            with contextlib.suppress(FileNotFoundError):
                pem_path.unlink()
        self._changed()

    def add(self, key: SigningKey) -> None:
        self._write(key)

    def update(self, key: SigningKey) -> None:
        if not (self.directory / f"{key.kid}.json").exists():
            raise not_found("signing key", "kid", key.kid)
        self._write(key)

    def delete(self, kid: Kid) -> None:
        self._changing()
        for suffix in (".json", ".pem"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{kid}{suffix}").unlink()
        self._changed()

    def _bump(self) -> None:
        _write_atomic(self.directory / ".version", secrets.token_hex(8).encode(), 0o600)

    def stamp(self) -> Hashable:
        """``.version``'s inode and times, from one ``stat`` (no open and read): every
        change replaces the file, so a new version is a new inode, or new times.

        File times come from the kernel's coarse clock (a tick of a few milliseconds) and
        a replaced file's inode number may be handed out again, so two versions written
        within one tick could share all three; a file written less than
        :data:`SETTLED_NS` ago gives a value equal to nothing (read the version), and a
        stamp taken after that can only equal one of a version written before it.
        """
        try:
            st = os.stat(self._version_file)
        except OSError:
            return object()  # missing or unreadable: version() says which
        if time.time_ns() - st.st_mtime_ns < SETTLED_NS:
            return object()
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)

    def version(self) -> str:
        """The store's version; every read starts here.

        :raises KeyStoreError: when the directory cannot be read (not a directory, or
            another user's), named, instead of the OSError a command showed as a traceback.
        """
        try:
            return (self.directory / ".version").read_text()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise KeyStoreError(
                f"AUTHSERVER_KEYS_DIR: cannot read {self.directory}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
