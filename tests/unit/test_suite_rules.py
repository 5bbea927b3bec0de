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


@pytest.mark.parametrize("count", [1, 2, 4, 6])
def test_each_worker_hands_out_ports_no_other_worker_does(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """Two workers choosing the same free port a moment before their servers bind it made
    one test talk to the other's server (a 401 from a server that never had the client)."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(count))
    slices = []
    for index in range(count):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        slices.append(set(helpers._port_slice()))
    low, high = helpers.PORT_RANGE
    for index, ports in enumerate(slices):
        assert len(ports) >= (high - low + 1) // count - 1
        assert min(ports) >= low
        assert max(ports) <= high
        for other in slices[index + 1 :]:
            assert not ports & other


def test_a_worker_does_not_hand_out_a_port_again_before_its_slice_comes_round() -> None:
    """A test that takes two ports before starting either server must get two."""
    taken = [helpers.free_port() for _ in range(200)]
    assert len(set(taken)) == len(taken)
    assert all(port in helpers._PORTS for port in taken)
