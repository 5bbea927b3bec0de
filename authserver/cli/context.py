"""What every command shares: the settings options, the settings they resolve to, the
services built on them, and domain errors turned into one-line exits."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import TypeVar

import click
from click.core import ParameterSource

from authserver import container
from authserver.audit.service import acting_as
from authserver.cli.output import OutputFailed
from authserver.cli.output import fail
from authserver.container import Services
from authserver.errors import AuthServerError
from authserver.errors import ConfigError
from authserver.errors import NotFound
from authserver.settings import CONFIG_ENV
from authserver.settings import FIELDS
from authserver.settings import Settings
from authserver.storage.sql.migrate import database_missing
from authserver.storage.sql.migrate import ensure_schema

F = TypeVar("F", bound=Callable[..., Any])

#: ``--json`` as every command spells it.
json_option = click.option("--json", "as_json", is_flag=True, help="print exactly one JSON object")


def settings_options(func: F) -> F:
    """One option per setting (``--database-url`` for ``AUTHSERVER_DATABASE_URL``),
    derived from the settings' declarations."""
    for f in reversed(FIELDS):
        func = click.option(
            f.option, f.name, default=None, type=str, metavar="VALUE", help=f"{f.help} [{f.env}]"
        )(func)
    return func


@dataclass
class CliState:
    """The group's settings options, kept for the command that runs (``ctx.obj``)."""

    overrides: dict[str, str] = field(default_factory=dict)
    config_file: str | None = None
    #: The settings the command acted on, shown (on stderr) after its output.
    used: Settings | None = None
    #: What the command created, "a new database" (a SQLite file) or "the schema" (in an
    #: existing, empty database), or None (shown after its output, even with --json: a
    #: write landing in a new, empty database is the trap of running in the wrong
    #: directory). Never "a new database" on PostgreSQL: the database existed already.
    created: str | None = None

    def schema_created(self, *, database_was_missing: bool) -> None:
        """Note that the command created the schema: in a new database (a SQLite file
        that was not there, which connecting made) or in an existing, empty one."""
        self.created = "a new database" if database_was_missing else "the schema"


def is_group_option(ctx: click.Context, name: str) -> bool:
    """Whether *name* (``--database-url``) is an option of the ``authserver`` group (a
    setting, or ``--config``): what a command given it after its name should point to."""
    group = ctx.find_root().command
    return any(name in p.opts for p in group.params if isinstance(p, click.Option))


def state() -> CliState:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def load_settings(**overrides: Any) -> Settings:
    """The settings of this invocation: *overrides* (a command's own options), then the
    group's options, the environment, the configuration file and the defaults."""
    st = state()
    merged = {**st.overrides, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings.from_env(config_file=st.config_file, **merged)


def handle_errors(func: F) -> F:
    """Map every expected failure to one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), 2)
        except NotFound as exc:
            # "No client with id X" is also what the wrong database answers, and a command
            # that fails prints no line saying what it used: the error line says it.
            used = state().used
            fail(f"{exc} ({used.describe()})" if used is not None else str(exc), 1)
        except AuthServerError as exc:
            # A StorageError among them: its message is already the operator's one line
            # (where, and why in words; never the driver's text or a password).
            fail(str(exc), 1)
        except OutputFailed as exc:
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


@contextmanager
def services(*, creates: bool = False) -> Iterator[Services]:
    """Services for one command.

    Only a command that may begin an installation (*creates*: ``clients create``, ``keys
    rotate``) creates the schema on an empty database (and says so), and the key
    directory when it writes a key (the store makes it then, not before);
    only ``serve`` and ``db upgrade`` upgrade an existing schema. Every other command
    creates nothing: those that read, and those that change what must already exist (a
    client, a key, a user's tokens), which in a new, empty database would only report
    "not found" or "revoked 0" from the wrong directory.
    """
    logging.getLogger("authserver").setLevel(logging.ERROR)
    settings = load_settings()
    st = state()
    st.used = settings
    svc = container.build(settings, readonly=not creates)
    try:
        missing = database_missing(svc.db)
        if ensure_schema(svc.db, create=creates, upgrade=False) == "created":
            st.schema_created(database_was_missing=missing)
        with acting_as("cli"):
            yield svc
    finally:
        svc.close()


#: A whole number as a command line writes it: ASCII digits, an optional minus. int()
#: (Click's INTEGER) also read "1_000", " 5" and other scripts' digits ("\u0665"), which
#: the admin API refuses (a JSON number; ``?limit=`` in ASCII digits).
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def _ascii_digits(value: Any, param_type: click.types.IntParamType, param: Any, ctx: Any) -> None:
    if isinstance(value, str) and not _WHOLE_NUMBER.fullmatch(value):
        param_type.fail(f"{value!r} is not a whole number (digits 0-9)", param, ctx)


class WholeNumber(click.types.IntParamType):
    """Click's INTEGER, in ASCII digits only (``--token-ttl``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _ascii_digits(value, self, param, ctx)
        return super().convert(value, param, ctx)


class WholeNumberRange(click.IntRange):
    """Click's INTEGER RANGE, in ASCII digits only (``audit --limit``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _ascii_digits(value, self, param, ctx)
        return super().convert(value, param, ctx)


def group_callback(config: str | None, options: dict[str, Any]) -> None:
    """Keep the group's settings options for the command (see :func:`load_settings`)."""
    st = state()
    st.overrides = {k: v for k, v in options.items() if v is not None}
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("config") is ParameterSource.ENVIRONMENT:
        # Read from AUTHSERVER_CONFIG by Settings itself, so an error names the variable,
        # not --config (and an empty one, which Click drops, is refused too).
        config = None
    st.config_file = config


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config",
        envvar=CONFIG_ENV,
        metavar="FILE",
        help=f"an env file of AUTHSERVER_* settings (lines NAME=VALUE) [{CONFIG_ENV}]",
    )(func)
