"""The repository stands alone and its reference is complete: every setting and every
command is in docs/reference.md, every relative link of the README and docs/ resolves, no
file points outside the repository for its specification, and the verifier packages'
READMEs repeat docs/sync-servers.md's option tables word for word."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest

from authserver.cli import cli
from authserver.settings import FIELDS

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference.md"


def _row(field: object) -> str:
    f = field
    return f"| `{f.env}` | `{f.option}` | DEFAULT | {f.help} |"  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", FIELDS, ids=[f.env for f in FIELDS])
def test_every_setting_has_a_row_in_the_reference(field: object) -> None:
    text = REFERENCE.read_text("utf-8")
    env, option = field.env, field.option  # type: ignore[attr-defined]
    assert re.search(rf"^\| `{env}` \| `{option}` \|", text, re.M), (
        f"add to the Settings table of docs/reference.md:\n{_row(field)}"
    )


def _command_paths(group: click.Group, path: tuple[str, ...] = ()) -> list[str]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _command_paths(command, (*path, name))
        else:
            out.append(" ".join((*path, name)))
    return out


@pytest.mark.parametrize("command", _command_paths(cli))
def test_every_command_is_in_the_reference(command: str) -> None:
    section = REFERENCE.read_text("utf-8").split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert f"`{command}" in section or f", `{command.split()[-1]}" in section, command


def _readme_synopsis() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    return text.split("## Command line", 1)[1].split("```", 2)[1]


@pytest.mark.parametrize("command", _command_paths(cli))
def test_every_command_is_in_the_readme_synopsis(command: str) -> None:
    """The README's command line block is where a newcomer looks first: it lacked
    ``tokens revoke`` and ``db copy``. Each command is there, its last word after its
    group (``authserver db upgrade | current | copy``) or after a ``|``."""
    synopsis = " ".join(_readme_synopsis().split())
    *group, name = command.split()
    head = " ".join(["authserver", *group])
    pattern = rf"{re.escape(head)} (?:[^|]*\| )*{re.escape(name)}\b"
    assert re.search(pattern, synopsis), f"add '{command}' to README.md's Command line block"


def _synopsis_lines() -> list[str]:
    """The README's synopsis, one line per command (an indented line continues one)."""
    lines: list[str] = []
    for line in _readme_synopsis().strip("\n").splitlines():
        if line[:1].isspace() and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


#: The synopsis lines that list their command's options (the others say ``...``).
LISTED_OPTIONS = [("audit",), ("tokens", "revoke"), ("doctor",)]


@pytest.mark.parametrize("path", LISTED_OPTIONS, ids=" ".join)
def test_a_synopsis_line_that_lists_options_lists_them_all(path: tuple[str, ...]) -> None:
    """``audit --until`` and ``--before`` were added to the reference but not to the
    README's line, which listed every other option of ``audit``. ``--json`` is said once
    for every command under the block."""
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    head = " ".join(["authserver", *path]) + " "
    [line] = [
        line[len(head) :]
        for line in _synopsis_lines()
        if line.startswith(head) and line[len(head) :].startswith(("[", "-"))
    ]
    options = [
        option
        for param in command.params
        if isinstance(param, click.Option)
        for option in param.opts
        if option != "--json"
    ]
    listed = set(re.findall(r"--[a-z][a-z-]*", line))
    missing = [option for option in options if option not in listed]
    assert not missing, f"add {missing} to README.md's line for authserver {' '.join(path)}"


def _tracked() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [ROOT / n.decode() for n in names if n and (ROOT / n.decode()).is_file()]


#: Documents that lived outside the repository; nothing may send a reader there.
OUTSIDE = re.compile(r"INTERFACE\.md|DESIGN\.md|\.\./shared|\bINTERFACE\b(?![A-Za-z])|\bDESIGN\b")


def test_nothing_cites_a_document_outside_the_repository() -> None:
    hits = []
    for path in _tracked():
        if path.suffix in {".png", ".jpg", ".ico", ".lock"} or path.name == "package-lock.json":
            continue
        try:
            text = path.read_text("utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if path == Path(__file__) and "OUTSIDE" in line:
                continue
            if OUTSIDE.search(line) and not re.search(r"\binterface\b", line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s]+)\)")


def test_relative_links_resolve() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text("utf-8")):
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


#: Each verifier package's README, and the section of docs/sync-servers.md on it.
VERIFIER_DOCS = {
    "python": (ROOT / "verifiers" / "python" / "README.md", "## Python: `authserver-verifier`"),
    "js": (ROOT / "verifiers" / "js" / "README.md", "## Node: `authserver-verifier`"),
}
OPTION_TABLE = "| option | default | meaning |"


def _option_tables(text: str) -> list[str]:
    """Every Markdown table of *text* whose header is :data:`OPTION_TABLE`."""
    tables = []
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == OPTION_TABLE:
            end = start
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            tables.append("\n".join(lines[start:end]))
    return tables


@pytest.mark.parametrize("package", VERIFIER_DOCS)
def test_a_verifier_readme_repeats_the_option_table_of_the_guide(package: str) -> None:
    """A package README is what PyPI and npm show; docs/sync-servers.md is the guide. An
    options table in both must be the same table, or one of them tells a reader a default
    or a meaning the other does not (the Python ones had drifted apart)."""
    readme, heading = VERIFIER_DOCS[package]
    guide = (ROOT / "docs" / "sync-servers.md").read_text("utf-8")
    assert heading in guide, heading
    section = guide.split(heading, 1)[1].split("\n## ", 1)[0]
    in_guide = _option_tables(section)
    assert len(in_guide) == 1, f"one options table in {heading!r} of docs/sync-servers.md"
    for table in _option_tables(readme.read_text("utf-8")):
        assert table == in_guide[0], f"{readme.relative_to(ROOT)} and docs/sync-servers.md"
