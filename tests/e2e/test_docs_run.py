"""Every shell and Python block in README.md and docs/*.md runs, so the docs cannot drift.

What a block gets (write blocks for exactly this):

* Its file's blocks run in order, top to bottom, against one fresh ``authserver serve``
  started for that file (one worker, SQLite, the file key store), so a later block may use
  what an earlier one left (a registered client, a file). Each block runs on its own: shell
  variables do not carry over from one block to the next, files do.
* The working directory is a temporary copy of the repository (its git-tracked files) with
  ``.venv`` pointing at the virtualenv running the tests, so ``.venv/bin/authserver``,
  ``.venv/bin/python`` and ``examples/...`` work as written; ``.venv/bin`` is first on
  ``PATH`` (``python3`` is the virtualenv's). ``HOME`` is a fresh directory inside it.
* Port ``8000`` in ``http://127.0.0.1:8000`` and ``http://localhost:8000`` is replaced by
  the server's port. Its issuer is the quickstart's, ``http://localhost:PORT`` (the default,
  following the port), so a block that names another issuer for that server fails.
* The environment has ``AUTHSERVER_DATABASE_URL``, ``AUTHSERVER_KEYS_DIR``,
  ``AUTHSERVER_ADMIN_TOKEN`` and ``AUTHSERVER_METRICS_TOKEN`` of that server (the two
  tokens are in :data:`ADMIN_TOKEN` and :data:`METRICS_TOKEN`), and ``AUTHSERVER_PORT`` its
  port; ``AUTHSERVER_ISSUER`` is unset, as in the quickstart.
* Blocks run with umask 022, a newcomer's usual one: a file they leave that holds a
  credential or a backup (:func:`_unprivate_files`) must be private all the same.
* Shell blocks (fences ``sh``, ``bash``, ``shell``) run with ``bash -euo pipefail``; Python
  blocks (``python``, ``py``) with the virtualenv's Python. A block passes when it exits 0
  within :data:`BLOCK_TIMEOUT` seconds. Other fences (json, yaml, text, js...) are not run.
* A block that cannot run is preceded by the line ``<!-- not run: REASON -->`` (blank lines
  may sit between); the reason must say why.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.conftest import require_postgres
from tests.helpers import cli_json_here
from tests.helpers import free_port
from tests.helpers import missing
from tests.helpers import run_cli_here

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix) if sys.prefix != sys.base_prefix else None

ADMIN_TOKEN = "docs-admin-token-0123456789abcdefghijklmnop"
METRICS_TOKEN = "docs-metrics-token-0123456789abcdefghijklmno"
BLOCK_TIMEOUT = 120

RUN_LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)\s*(?P<info>[^\s`]*)[^\n]*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  #: 1-based line of the opening fence
    language: str  #: "sh" or "python"; "" for a block that is not run
    code: str
    skip_reason: str | None  #: the marker's reason, when marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of *path* (or of *text*, a part of it), each with its marker."""
    lines = (path.read_text("utf-8") if text is None else text).splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info, start = match["fence"], match["info"].lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = NOT_RUN.match(lines[before]) if before >= 0 else None
        out.append(
            Block(
                path=path,
                line=start + 1,
                language=RUN_LANGUAGES.get(info, ""),
                code="\n".join(body) + "\n",
                skip_reason=marker["reason"].strip() if marker else None,
            )
        )
    return out


def _runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language and b.skip_reason is None]


def test_every_not_run_marker_says_why() -> None:
    marked = [b for p in doc_files() for b in blocks(p) if b.skip_reason is not None]
    for block in marked:
        assert len(block.skip_reason or "") >= 10, f"{block.where}: say why it is not run"


def test_the_block_reader_finds_markers_and_languages(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "```sh\necho one\n```\n"
        "<!-- not run: needs a second machine -->\n\n"
        "```python\nprint(2)\n```\n"
        "```json\n{}\n```\n"
        "````bash\n```\n````\n"
    )
    found = blocks(doc)
    assert [(b.line, b.language, b.skip_reason) for b in found] == [
        (1, "sh", None),
        (6, "python", "needs a second machine"),
        (9, "", None),
        (12, "sh", None),
    ]
    assert found[0].code == "echo one\n"
    assert found[3].code == "```\n"


def _tracked_copy(dest: Path) -> None:
    """The repository as a clone has it: the git-tracked files (plus untracked, not ignored
    ones, so a doc being written is checked before its first commit)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        source = ROOT / rel
        if not source.is_file():
            continue  # deleted in the work tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


class DocServer:
    """A copy of the repository with ``authserver serve`` running in it."""

    def __init__(self, base: Path) -> None:
        assert VENV is not None, "run the tests from the project's virtualenv"
        self.work = base / "repo"
        self.work.mkdir()
        _tracked_copy(self.work)
        (self.work / ".venv").symlink_to(VENV)
        home = self.work / "home"
        home.mkdir()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
        env.update(
            {
                "PATH": f"{self.work / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "HOME": str(home),
                "AUTHSERVER_PORT": str(self.port),
                "AUTHSERVER_DATABASE_URL": f"sqlite:///{self.work / 'authserver.db'}",
                "AUTHSERVER_KEYS_DIR": str(self.work / "keys"),
                "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
                "AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN,
                "AUTHSERVER_WORKERS": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        self.env = env
        self.log_path = base / "serve.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.work / ".venv" / "bin" / "authserver"), "serve"],
                cwd=self.work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(self.log_path)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, log: Path) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"authserver serve exited:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"authserver serve did not get ready:\n{log.read_text()[-3000:]}")

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        code = block.code
        for host in ("127.0.0.1", "localhost"):
            code = code.replace(f"http://{host}:8000", f"http://{host}:{self.port}")
        if block.language == "sh":
            argv = ["bash", "-euo", "pipefail", "-c", code]
        else:
            argv = [str(self.work / ".venv" / "bin" / "python"), "-c", code]
        try:
            return subprocess.run(
                argv,
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
                check=False,
                preexec_fn=lambda: os.umask(0o022),
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{block.where}: still running after {BLOCK_TIMEOUT}s") from exc

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)


#: Files a block may leave that hold a secret or personal data: client credentials and
#: tokens (the credential names of .gitignore and every JSON answer), configuration files,
#: database copies and key archives.
PRIVATE_FILES = re.compile(r".*(\.json|\.env|\.db|\.dump|\.tgz|\.tar\.gz)$")


def _unprivate_files(server: DocServer, before: set[Path]) -> list[str]:
    """The files the blocks left, holding what :data:`PRIVATE_FILES` names, that another
    user of the machine may read."""
    found = []
    for path in sorted(server.work.rglob("*")):
        if path in before or not path.is_file() or path.is_symlink():
            continue
        if PRIVATE_FILES.match(path.name) and path.stat().st_mode & 0o077:
            found.append(f"{path.relative_to(server.work)} ({oct(path.stat().st_mode & 0o777)})")
    return found


DOCS_WITH_BLOCKS = [p for p in doc_files() if _runnable(p)]


@pytest.mark.parametrize("path", DOCS_WITH_BLOCKS, ids=[p.name for p in DOCS_WITH_BLOCKS])
def test_doc_blocks_run(path: Path, tmp_path: Path) -> None:
    server = DocServer(tmp_path)
    before = set(server.work.rglob("*"))
    try:
        for block in _runnable(path):
            result = server.run(block)
            assert result.returncode == 0, (
                f"{block.where} ({block.language}) exited {result.returncode}\n"
                f"--- block ---\n{block.code}--- stdout ---\n{result.stdout[-3000:]}"
                f"--- stderr ---\n{result.stderr[-3000:]}"
            )
        # A secret or a backup written where others may read it (a block without umask
        # 077) is a leak the reader copies.
        assert _unprivate_files(server, before) == [], path.name
    finally:
        server.stop()


def _quickstart_serve_line() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first = next(b for b in blocks(ROOT / "README.md", section) if b.language == "sh")
    return first.code.strip()


def test_readme_quickstart_serves(tmp_path: Path) -> None:
    """The README's first command, exactly as written, in a fresh copy of the repository:
    a new virtualenv, the package installed, and a server that answers, with an issuer
    that follows its port. AUTHSERVER_PORT (a free port) is the only addition, so the
    test never takes 8000 from someone else."""
    line = _quickstart_serve_line()
    assert line.endswith(".venv/bin/authserver serve"), line
    work = tmp_path / "clone"
    work.mkdir()
    _tracked_copy(work)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    env.pop("VIRTUAL_ENV", None)
    env["AUTHSERVER_PORT"] = str(port)
    log_path = tmp_path / "quickstart.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", line],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600  # pip builds and installs the package first
        metadata = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = requests.get(
                    f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", timeout=2
                )
                if answer.status_code == 200:
                    metadata = answer.json()
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        assert metadata is not None, log_path.read_text()[-5000:]
        assert metadata["issuer"] == f"http://localhost:{port}"
        assert (work / "authserver.db").is_file()
        assert list((work / "keys").glob("*.pem"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(5)


def test_postgresql_backup_and_restore_blocks_run(tmp_path: Path) -> None:
    """operations.md's PostgreSQL backup and restore blocks, as written, with the servers'
    AUTHSERVER_DATABASE_URL in the SQLAlchemy form the docs give it
    (``postgresql+psycopg://``): pg_dump took that URL for a database name ("database
    \"postgresql+psycopg://...\" does not exist"). A client deleted after the dump is back
    after the restore."""
    require_postgres()
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        missing("pg_dump and pg_restore (PostgreSQL's client tools) are not installed")
    backup, restore = [
        b
        for b in blocks(ROOT / "docs" / "operations.md")
        if re.search(r"\bpg_(dump|restore) ", b.code)
    ]
    assert "pg_dump" in backup.code
    assert "pg_restore" in restore.code
    admin = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    database = f"docs_backup_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = (
        make_url(admin)
        .set(drivername="postgresql+psycopg", database=database)
        .render_as_string(hide_password=False)
    )
    env = {"AUTHSERVER_DATABASE_URL": url, "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys")}
    shell_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    shell_env.update(env, HOME=str(tmp_path))

    def run(block: Block) -> None:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.code],
            cwd=tmp_path,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, f"{block.where}\n{result.stderr[-3000:]}"

    try:
        client_id = cli_json_here(env, "clients", "create", "--name", "backed-up")["client_id"]
        run(backup)
        dump = tmp_path / "authserver.dump"
        assert dump.stat().st_mode & 0o077 == 0  # it holds the audit trail
        deleted = run_cli_here(env, "clients", "delete", client_id, "--yes")
        assert deleted.returncode == 0, deleted.stderr
        run(restore)
        assert cli_json_here(env, "clients", "show", client_id)["name"] == "backed-up"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
