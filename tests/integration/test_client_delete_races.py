"""A change of a client racing its deletion, on other instances: the change reads the
client under the clients lock (``ClientStore.lock``) and then writes its row; a delete
that took the row first and the lock after it deadlocked with such a change: PostgreSQL
aborted one of them, answered 503 "the database is unavailable" though it was not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from collections.abc import Iterator

import pytest

from authserver.container import Services
from authserver.errors import NotFound
from tests.conftest import make_services

pytestmark = pytest.mark.integration


@pytest.fixture
def instances(services: Services) -> Iterator[list[Services]]:
    """Three server instances on one database (each with its own pools and caches)."""
    others = [make_services(services.settings) for _ in range(2)]
    yield [services, *others]
    for other in others:
        other.close()


def _race(jobs: list[Callable[[], None]]) -> list[BaseException]:
    """Run *jobs* at once, each on its own thread; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(job: Callable[[], None]) -> None:
        start.wait()
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a change hung"
    return errors


def test_a_change_racing_a_delete_is_not_found_never_a_storage_error(
    instances: list[Services],
) -> None:
    for _ in range(5):
        first = instances[0]
        with first.unit_of_work():
            client, _ = first.clients.create(name="doomed")
        client_id = str(client.client_id)

        def act(svc: Services, action: str, client_id: str = client_id) -> Callable[[], None]:
            def job() -> None:
                with svc.unit_of_work():
                    if action == "delete":
                        svc.clients.delete(client_id)
                    elif action == "rotate":
                        svc.clients.rotate_secret(client_id)
                    else:
                        svc.clients.set_enabled(client_id, action == "enable")

            return job

        errors = _race(
            [
                act(instances[0], "delete"),
                act(instances[1], "disable"),
                act(instances[2], "enable"),
                act(instances[1], "rotate"),
                act(instances[2], "delete"),
            ]
        )
        # The delete that came second, and any change after the delete, find no client.
        assert all(isinstance(e, NotFound) for e in errors), errors
        with first.unit_of_work(), pytest.raises(NotFound):
            first.clients.get(client_id)
