"""A database URL's port outside 1-65535 is a configuration error naming the variable, not
a connection failure with no reason (99999) or libpq's default port (0)."""

from __future__ import annotations

import pytest

from authserver.errors import ConfigError
from authserver.storage.sql.engine import make_engine


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:pw-5e1d77@127.0.0.1:99999/test",
        "postgresql+psycopg://u:pw-5e1d77@127.0.0.1:0/test",
        "postgresql+psycopg://u:pw-5e1d77@db.example:notaport/test",
    ],
)
def test_a_port_outside_the_range_is_refused_without_the_url(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_engine(url)
    assert str(refused.value) == (
        "AUTHSERVER_DATABASE_URL: not a valid SQLAlchemy URL (its port must be a number "
        "from 1 to 65535)"
    )


def test_ports_in_the_range_make_an_engine() -> None:
    for port in (1, 5432, 65535):
        make_engine(f"postgresql+psycopg://u@127.0.0.1:{port}/test").dispose()
