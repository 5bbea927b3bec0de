"""Rules the test suite keeps about itself."""

from __future__ import annotations

import pytest

from tests import helpers


@pytest.mark.parametrize("under_ci", [True, False])
def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, under_ci: bool
) -> None:
    monkeypatch.setattr(helpers, "UNDER_CI", under_ci)
    expected = pytest.fail.Exception if under_ci else pytest.skip.Exception
    with pytest.raises(expected, match="initdb"):
        helpers.missing("initdb is not installed")
