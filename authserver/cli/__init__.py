"""The ``authserver`` command."""

from __future__ import annotations

import atexit
import os
import sys
import threading
import warnings
from typing import Any
from typing import NoReturn

import click

from authserver import __version__
from authserver.cli.audit import audit
from authserver.cli.clients import clients
from authserver.cli.context import config_option
from authserver.cli.context import group_callback
from authserver.cli.context import is_group_option
from authserver.cli.context import settings_options
from authserver.cli.context import state
from authserver.cli.db import db
from authserver.cli.doctor import doctor
from authserver.cli.keys import keys
from authserver.cli.serve import serve
from authserver.cli.tokens import tokens
from authserver.settings import unknown_variables


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="authserver")
@config_option
@settings_options
def cli(config: str | None, **options: Any) -> None:
    """authserver: OAuth2 client-credentials token service for sync servers.

    Every setting is an option here (before the command: authserver --database-url URL
    clients list), an AUTHSERVER_* environment variable, or a line of the --config file;
    options win over variables, variables over the file. See docs/reference.md.
    """
    for warning in unknown_variables():
        click.echo(f"authserver: warning: {warning}", err=True)
    group_callback(config, options)


@cli.result_callback()
def _say_what_was_used(*_args: Any, **_kwargs: Any) -> None:
    # After a command's output: which database, key store and issuer it acted on, so an
    # operator in the wrong directory (or with the wrong variables) sees it at once. On
    # stderr, with --json too: stdout stays exactly one JSON object.
    st = state()
    if st.used is None:
        return
    if st.created:
        click.echo(f"authserver: note: created {st.created}: {st.used.describe()}", err=True)
    else:
        click.echo(f"({st.used.describe()})", err=True)


cli.add_command(serve)
cli.add_command(db)
cli.add_command(clients)
cli.add_command(keys)
cli.add_command(audit)
cli.add_command(doctor)
cli.add_command(tokens)


def run(args: list[str] | None = None) -> int:
    """Run the command line *args* (``sys.argv[1:]`` when None) and return its exit status.
    A usage error is one line on stderr and status 2, like every other error of this CLI
    (Click's own rendering adds a usage line and a help hint). A command that ends with
    ``SystemExit`` gets the status the interpreter would give it. :func:`main` is the
    process's entry point."""
    closed = [name for name in ("stdout", "stderr") if getattr(sys, name) is None]
    if closed:
        # Started with a standard stream closed (``>&-``): Click's echo would write nothing
        # and succeed, so a new client secret would be committed and never shown, and no
        # error could be reported. Nothing is done.
        if sys.stderr is not None:
            sys.stderr.write(f"authserver: error: {' and '.join(closed)} is closed\n")
        return 1
    try:
        code = cli.main(args=args, prog_name="authserver", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:
        if isinstance(exc, click.NoSuchOption) and (misplaced := _misplaced_group_option(exc)):
            click.echo(f"authserver: error: {misplaced}", err=True)
            return exc.exit_code
        where = exc.ctx.command_path if exc.ctx is not None else "authserver"
        click.echo(f"authserver: error: {exc.format_message()} (see '{where} --help')", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("authserver: aborted", err=True)
        return 1
    except SystemExit as exc:  # a command's own exit, as the interpreter would end it
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(exc.code, err=True)
        return 1
    return code if isinstance(code, int) else 0


def _misplaced_group_option(exc: click.NoSuchOption) -> str | None:
    """What to say when *exc*'s option is one of the ``authserver`` group's (a setting, or
    ``--config``) given after a command that does not take it: ``authserver clients list
    --database-url URL`` was refused as "No such option", as if no such option existed."""
    ctx = exc.ctx
    if ctx is None or ctx.parent is None:
        return None  # given to the group itself: unknown indeed
    name = exc.option_name
    if not is_group_option(ctx, name):
        return None
    command = ctx.command_path.removeprefix(f"{ctx.find_root().info_name} ")
    value = "FILE" if name == "--config" else "VALUE"
    return (
        f"{name} is an option of 'authserver', not of {command!r}: put it before the "
        f"command (authserver {name} {value} {command} ...)"
    )


def main() -> None:
    """The ``authserver`` command."""
    warnings.showwarning = _one_line_warning
    _exit(run())


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A library's warning as one line on stderr, like every message of this command
    (Python's own format adds the warning's source file and line of code)."""
    text = (str(message).strip().splitlines() or [category.__name__])[0]
    if sys.stderr is not None:
        sys.stderr.write(f"authserver: warning: {text}\n")


def _exit(status: int) -> NoReturn:
    """End the process with *status* once its output is flushed and its exit handlers
    (``atexit``: logging, multiprocessing, a coverage tool) have run, without the
    interpreter's teardown of every imported module: about 0.15 s of CPU, a third of a
    short command's, that changes nothing outside the process. Where another thread is
    still running, or the output cannot be flushed, the interpreter ends it as usual
    (joining the thread, reporting the write error)."""
    if not _flushed() or threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()
    _flushed()  # what an exit handler printed
    os._exit(status)


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return False
    return True
