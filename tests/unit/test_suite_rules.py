"""Rules the test suite keeps about itself."""

from __future__ import annotations

import pytest

from tests import helpers


@pytest.mark.parametrize(
    ("ci", "expected"),
    [
        ("true", pytest.fail.Exception),
        ("1", pytest.fail.Exception),
        ("yes", pytest.fail.Exception),
        (None, pytest.skip.Exception),
        ("", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
        ("0", pytest.skip.Exception),
    ],
)
def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, expected: type[BaseException]
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(expected, match="initdb"):
        helpers.missing("initdb is not installed")


@pytest.mark.parametrize(
    ("require", "expected"), [("1", pytest.fail.Exception), (None, pytest.skip.Exception)]
)
def test_a_require_variable_makes_it_required_outside_ci(
    monkeypatch: pytest.MonkeyPatch, require: str | None, expected: type[BaseException]
) -> None:
    monkeypatch.delenv("CI", raising=False)
    if require is None:
        monkeypatch.delenv("AUTHSERVER_TEST_REQUIRE_THING", raising=False)
    else:
        monkeypatch.setenv("AUTHSERVER_TEST_REQUIRE_THING", require)
    with pytest.raises(expected, match="thing unreachable"):
        helpers.missing("thing unreachable", required_by="AUTHSERVER_TEST_REQUIRE_THING")
