"""The per-process client cache (``ClientService.find``, read on every authentication):
unknown ids, which anyone can send, are remembered apart from the registered clients, so
no number of them pushes a client out of the cache and back onto a store read per
request."""

from __future__ import annotations

from typing import Any

import pytest

from authserver.clients import service as client_service
from authserver.settings import Settings
from tests.conftest import make_services

pytestmark = pytest.mark.integration


def test_a_flood_of_unknown_ids_never_evicts_a_client(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_service, "CACHE_SIZE", 4)
    monkeypatch.setattr(client_service, "UNKNOWN_CACHE_SIZE", 4)
    services = make_services(settings)
    try:
        with services.unit_of_work():
            client, _ = services.clients.create(name="backend")
        cid = str(client.client_id)
        store: Any = services.clients._store
        real_get = store.get
        reads: list[str] = []

        def counted(client_id: Any) -> Any:
            reads.append(str(client_id))
            return real_get(client_id)

        monkeypatch.setattr(store, "get", counted)
        assert services.clients.find(cid) is not None
        assert reads == [cid]
        for n in range(50):  # twelve times what either cache holds
            assert services.clients.find(f"stranger-{n}") is None
        assert len(reads) == 51  # each new unknown id is read once
        assert services.clients.find(cid) is not None
        assert services.clients.find("stranger-49") is None  # a recent one: remembered
        assert len(reads) == 51, reads[51:]
    finally:
        services.close()
