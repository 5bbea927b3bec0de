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
