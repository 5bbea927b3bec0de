"""The audit vocabulary has one home (``audit.model.ACTIONS``), which ``authserver audit
--action`` offers: an action recorded anywhere else would be unsearchable by name."""

from __future__ import annotations

import re
from pathlib import Path

from authserver.audit.model import ACTIONS

PACKAGE = Path(__file__).resolve().parents[2] / "authserver"

#: A string literal shaped like an action: ``token.issued``, ``client.secret_rotated``.
ACTION_LITERAL = re.compile(r"""["']((?:token|client|key|status|tokens)s?\.[a-z_]+)["']""")
NOT_ACTIONS = {"json", "pem", "py", "tmp", "lock"}


def test_every_recorded_action_is_declared() -> None:
    found = {
        match
        for path in PACKAGE.rglob("*.py")
        for match in ACTION_LITERAL.findall(path.read_text("utf-8"))
        if match.rsplit(".", 1)[1] not in NOT_ACTIONS
    }
    assert found, "the scan found no action literal at all: the pattern is wrong"
    assert found <= set(ACTIONS), sorted(found - set(ACTIONS))
