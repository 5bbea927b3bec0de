"""authserver.metrics: the per-process cap on ``client_id`` label values of
``authserver_tokens_issued_total`` (the first ``MAX_CLIENT_LABELS`` clients get their own
label, further clients are counted under ``_other``)."""

from __future__ import annotations

import secrets
import threading

import pytest
from prometheus_client import REGISTRY

from authserver import metrics

ISSUED = "authserver_tokens_issued_total"
CAP = 3


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cap of CAP, and no client labelled yet in this process (restored afterwards)."""
    monkeypatch.setattr(metrics, "MAX_CLIENT_LABELS", CAP)
    monkeypatch.setattr(metrics, "_labelled_clients", set())


def issued(client_id: str) -> float:
    return REGISTRY.get_sample_value(ISSUED, {"client_id": client_id}) or 0.0


def new_ids(n: int) -> list[str]:
    return [f"as_client_{secrets.token_urlsafe(16)}" for _ in range(n)]


def test_other_can_never_be_a_client_id() -> None:
    assert not metrics.OTHER_CLIENTS.startswith("as_client_")


def test_first_clients_get_their_own_label_and_the_next_one_goes_to_other() -> None:
    ids = new_ids(CAP + 1)
    other_before = issued(metrics.OTHER_CLIENTS)
    for client_id in ids:
        metrics.token_issued(client_id)
    for client_id in ids[:CAP]:
        assert issued(client_id) == 1
    assert issued(ids[CAP]) == 0
    assert REGISTRY.get_sample_value(ISSUED, {"client_id": ids[CAP]}) is None
    assert issued(metrics.OTHER_CLIENTS) == other_before + 1


def test_a_known_client_keeps_its_label_after_the_cap_is_reached() -> None:
    ids = new_ids(CAP + 2)
    for client_id in ids:
        metrics.token_issued(client_id)
    other_before = issued(metrics.OTHER_CLIENTS)
    metrics.token_issued(ids[0])
    metrics.token_issued(ids[CAP - 1])
    assert issued(ids[0]) == 2
    assert issued(ids[CAP - 1]) == 2
    assert issued(metrics.OTHER_CLIENTS) == other_before
    # A client over the cap stays under _other, even when it comes back.
    metrics.token_issued(ids[CAP])
    assert issued(ids[CAP]) == 0
    assert issued(metrics.OTHER_CLIENTS) == other_before + 1


def test_the_cap_holds_under_concurrent_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 50
    monkeypatch.setattr(metrics, "MAX_CLIENT_LABELS", cap)
    ids = new_ids(4 * cap)
    start = threading.Barrier(8)
    labels: list[list[str]] = [[] for _ in range(8)]

    def run(n: int) -> None:
        start.wait()
        labels[n] = [metrics.client_label(client_id) for client_id in ids[n::8]]

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    own = {label for chunk in labels for label in chunk} - {metrics.OTHER_CLIENTS}
    assert len(own) == cap
    assert own == metrics._labelled_clients
    assert sum(chunk.count(metrics.OTHER_CLIENTS) for chunk in labels) == 3 * cap
