"""docs/design.md, style rule 11, enforced on authserver/: a function-level import says why
it is not at the top of its module, and comments describe the code as it is, not its
history.

A function-level import is allowed only to break an import cycle or to keep start-up light
(a module that not every entry point needs). The reason goes in a comment on the import's
own line or on the line above it; a run of consecutive imports shares the comment above
the first. The start-up reasons given in authserver/ are checked below: what each import
keeps out of a process stays out of it.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "authserver"

#: Phrases that tell what the code used to do instead of why it is as it is. "it was" only
#: as an aside about the code ("it was, here,", "it was slower", "it was 3x"): describing
#: data, as in "if it was the current key", is the present tense of a past event.
HISTORY = re.compile(
    r"\bit was(?=[,;:)]| here\b| once\b| slower\b| faster\b| about\b| \d)"
    r"|\bused to be\b|\bpreviously\b|\bbefore this change\b|\bthis round\b"
    r"|\bissue #?\d+\b",
    re.IGNORECASE,
)


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


#: Tool directives (type-ignore, noqa, coverage pragmas), which say nothing about why.
PRAGMA = re.compile(r"#\s*(type:\s*ignore(\[[^\]]*\])?|noqa(:\s*[A-Z0-9, ]+)?|pragma:[^#]*)")


def _comment_lines(source: str) -> dict[int, str]:
    """Line number -> the text of the ``#`` comment on that line."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


def _says_something(comment: str) -> bool:
    """A comment with words beside any tool directive."""
    return bool(PRAGMA.sub("", comment).strip("# -"))


def uncommented_imports(source: str) -> list[int]:
    """Lines of imports inside a function with no comment on their line, nor on the line
    above their run of consecutive imports (blank lines between them allowed)."""
    tree = ast.parse(source)
    comments = _comment_lines(source)
    lines = source.splitlines()
    nested = [
        node
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(func)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    import_lines = {n for node in nested for n in range(node.lineno, (node.end_lineno or 0) + 1)}
    missing = []
    for node in nested:
        end = node.end_lineno or node.lineno
        if any(_says_something(comments.get(n, "")) for n in range(node.lineno, end + 1)):
            continue
        above = node.lineno - 1
        while above > 0 and (above in import_lines or not lines[above - 1].strip()):
            above -= 1
        if above > 0 and lines[above - 1].strip().startswith("#"):
            continue
        missing.append(node.lineno)
    return sorted(set(missing))


def history_phrases(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment or docstring line that tells history."""
    found = [(n, text) for n, text in _comment_lines(source).items() if HISTORY.search(text)]
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=False)
        if doc is None:
            continue
        start = node.body[0].lineno
        found += [
            (start + i, line) for i, line in enumerate(doc.splitlines()) if HISTORY.search(line)
        ]
    return sorted(found)


def test_every_function_level_import_says_why() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources()
        for line in uncommented_imports(path.read_text("utf-8"))
    ]
    assert not offenders, (
        "a function-level import needs a comment saying which cycle it breaks or which "
        f"start-up it keeps light (else move it to the top): {offenders}"
    )


def test_comments_tell_no_history() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()}"
        for path in _sources()
        for line, text in history_phrases(path.read_text("utf-8"))
    ]
    assert not offenders, (
        "comments say why the code is as it is now, not what it was: " + "; ".join(offenders)
    )


# -- the checks themselves catch what they claim to ----------------------------------------

_UNCOMMENTED = '''
def f():
    """Doc."""
    import json

    return json
'''

_COMMENTED_RUN = """
def f():
    # Start-up: only this command needs them.
    from a import b
    from a import c

    from d import e
    import g  # Cycle: g imports this module.
    return b, c, e, g
"""

_PRAGMA_ONLY = """
def f():
    import json  # type: ignore[import-untyped]
    from a import b  # noqa: PLC0415
    import c  # noqa: PLC0415 - start-up: only this command needs c.
    return json, b, c
"""

_COMMENT_AFTER_CODE = """
def f():
    # A comment about x, not about the import below.
    x = 1
    from a import b
    return x, b
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [(_UNCOMMENTED, [4]), (_COMMENTED_RUN, []), (_PRAGMA_ONLY, [3, 4]), (_COMMENT_AFTER_CODE, [5])],
    ids=["uncommented", "commented-run", "pragma-only", "comment-before-other-code"],
)
def test_uncommented_imports_detects(source: str, expected: list[int]) -> None:
    assert uncommented_imports(source) == expected


@pytest.mark.parametrize(
    "comment",
    [
        "# RETURNING: the rowcount can be -1 (it was, here, making duplicates look new).",
        "# The main pool used to be the only one.",
        "# Previously a cursor per read.",
        "# Before this change every read made a cursor.",
        "# Measured this round: 40 us per read.",
        "# See issue 12.",
    ],
)
def test_history_phrases_detects_comments(comment: str) -> None:
    assert history_phrases(f"x = 1\n{comment}\ny = 2\n") == [(2, comment)]


def test_history_phrases_detects_docstrings() -> None:
    source = 'def f():\n    """Read a row.\n\n    It was slower through the ORM."""\n'
    assert [line for line, _ in history_phrases(source)] == [4]


def test_history_phrases_passes_the_present_tense() -> None:
    source = (
        "# A cursor per read costs about a third of the read, so each connection keeps one.\n"
        "# The previous secret works until the grace period ends.\n"
        "# If it was the current key, the next key takes over; when it was built: its iat.\n"
    )
    assert history_phrases(source) == []


# -- what the start-up comments promise ------------------------------------------------------

_CLI_IMPORT = """
import sys
import authserver.cli
print(",".join(m for m in ("flask", "granian", "authserver.web.app") if m in sys.modules))
"""

#: A worker as ``serve`` makes it: the master's preparation, then granian's call of
#: worker_app in the (forked) worker; then a revocation, which runs insert_or_ignore.
_WORKER = """
import sys
from authserver.cli.serve import prepare, worker_app
from authserver.settings import Settings

prepare(Settings.from_env())
app = worker_app()
services = app.extensions["authserver.services"]
with services.unit_of_work():
    services.revocations.revoke("jti-1", "as_client_x", 2e9, 1e9)
print(",".join(m for m in sys.argv[1:] if m in sys.modules))
"""


def _loaded(code: str, env: dict[str, str], *modules: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *modules],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_commands_do_not_load_the_server() -> None:
    """cli/serve.py imports the web app and granian inside the functions that serve."""
    assert _loaded(_CLI_IMPORT, {**os.environ, "AUTHSERVER_CONFIG": ""}) == ""


@pytest.mark.parametrize(
    ("db_url", "other_database"),
    [("sqlite", ["psycopg"]), ("postgresql", ["sqlalchemy.dialects.sqlite"])],
    indirect=["db_url"],
)
def test_a_worker_loads_no_modules_of_the_other_database(
    db_url: str, other_database: list[str], env_for: Callable[..., dict[str, str]]
) -> None:
    """storage/sql/notify.py imports psycopg, and engine.insert_or_ignore a dialect's
    insert, only where that database is in use."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")},
        **env_for(db_url, AUTHSERVER_SCHEDULER="false"),
    }
    assert _loaded(_WORKER, env, *other_database) == ""
