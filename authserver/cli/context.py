"""Building services for a CLI command, and turning domain errors into one-line exits."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

from authserver import container
from authserver.audit.service import acting_as
from authserver.cli.output import fail
from authserver.container import Services
from authserver.errors import AuthServerError
from authserver.errors import ConfigError
from authserver.errors import Conflict
from authserver.errors import InvalidInput
from authserver.errors import KeyStoreError
from authserver.errors import NotFound
from authserver.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Map every expected failure to one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), 2)
        except (NotFound, Conflict, InvalidInput, KeyStoreError, AuthServerError) as exc:
            fail(str(exc), 1)
        except SQLAlchemyError as exc:
            # The driver's message can hold the URL (and its password): name the type only.
            fail(f"database error ({type(exc).__name__}); check AUTHSERVER_DATABASE_URL", 1)

    return wrapper  # type: ignore[return-value]


@contextmanager
def services(**overrides: Any) -> Iterator[Services]:
    """Services for one command, on a schema created if the database is empty."""
    from authserver.cli.db import ensure_schema

    logging.getLogger("authserver").setLevel(logging.ERROR)
    settings = Settings.from_env(**overrides)
    svc = container.build(settings)
    try:
        ensure_schema(svc, upgrade_existing=False)
        with acting_as("cli"):
            yield svc
    finally:
        svc.close()
