"""The dependency rules of docs/design.md, enforced: the import-linter contracts in
pyproject.toml."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is part of the test extra"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].replace("0 broken", "")


#: Run as ``authserver clients list`` on a migrated SQLite file, then say which of the heavy
#: modules the command imported.
_IMPORTED = """
import atexit, sys
names = lambda: {m.split(".")[0] for m in sys.modules} | set(sys.modules)
atexit.register(lambda: print(sorted(names() & HEAVY)))
HEAVY = {"alembic", "flask", "granian", "authlib", "werkzeug", "limits", "sqlalchemy.orm"}
from authserver.cli import main
sys.argv = ["authserver", "clients", "list"]
main()
"""


def test_a_command_that_does_not_migrate_or_serve_imports_neither(tmp_path: Path) -> None:
    """Every command starts by checking the schema; only ``serve`` and ``db`` need Alembic,
    and only ``serve`` the web stack and the rate limiter; nothing needs SQLAlchemy's ORM.
    Importing them costs a command most of its start-up."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
        "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
    }
    upgrade = [sys.executable, "-m", "authserver", "db", "upgrade"]
    subprocess.run(upgrade, env=env, capture_output=True, check=True, timeout=60)
    listed = subprocess.run(
        [sys.executable, "-c", _IMPORTED], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip().splitlines()[-1] == "[]", listed.stdout
