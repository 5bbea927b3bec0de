"""docs/security.md cites tests by path and name; every citation must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_security_review_cites_existing_tests() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    citations = re.findall(
        r"`((?:unit|integration|e2e|verifiers/python/tests)/[\w/]+\.py)(?:::(\w+))?`", text
    )
    assert len(citations) > 20
    assert any(path.startswith("verifiers/") for path, _ in citations)
    for path, name in citations:
        base = ROOT if path.startswith("verifiers/") else ROOT / "tests"
        source = (base / path).read_text()
        if name:
            assert re.search(rf"def {name}\b", source), f"{path}::{name} is cited but missing"


def test_every_file_a_walkthrough_writes_is_ignored_by_git() -> None:
    """The README and docs/ write credentials next to the code (a client's secret, a token,
    a database dump, the compose .env): each such file must be one git never commits.
    dexie-answer.json (a token), authserver.dump and .env were not."""
    import subprocess

    written: set[str] = {".env"}  # docker-compose.yml: the passphrase "in an .env file"
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        fenced = re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.S | re.M)
        for block in (text for lang, text in fenced if lang in ("sh", "bash", "console", "")):
            written.update(re.findall(r"(?<![>&\d])>\s*([\w.-]+\.(?:json|env|dump|pem))\b", block))
            written.update(re.findall(r"--file=([\w.-]+)", block))
    assert {"dexie-answer.json", "authserver.dump", "dexie-client.json"} <= written
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *sorted(written)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert sorted(set(written) - set(ignored)) == []
