"""``authserver serve``: the production HTTP server (granian, one worker process per core).

Before any worker starts, in the master process: validate the configuration, bring the
database schema to head (under the migration lock), check that the stored keys can be
decrypted, and create the first signing key on an empty store. Each worker then builds its
own services (no database connection crosses a fork) and runs the key schedule.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any
from typing import NoReturn

import click

from authserver import container
from authserver import logs
from authserver.cli.context import load_settings
from authserver.cli.context import settings_options
from authserver.cli.context import state
from authserver.cli.output import fail
from authserver.cli.output import one_line
from authserver.errors import ConfigError
from authserver.errors import KeyStoreError
from authserver.errors import StorageError
from authserver.scheduler import KeyScheduler
from authserver.settings import CONFIG_ENV
from authserver.settings import FIELDS
from authserver.settings import SECRET_ENV
from authserver.settings import Settings
from authserver.settings import default_issuer
from authserver.storage.sql.migrate import ensure_schema

log = logging.getLogger("authserver")


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)


def prepare(settings: Settings) -> None:
    """Schema, key store and first key, once, before the workers start."""
    if settings.issuer_is_http and not settings.issuer_is_loopback:
        # Unsafe conveniences are loud (docs/design.md, style rule 8): tokens will name a plain-http
        # issuer, and metadata will send verifiers to fetch keys over plain http.
        log.warning(
            "AUTHSERVER_ISSUER is a plain http:// URL on a non-loopback host; use https "
            "in production (AUTHSERVER_PRODUCTION=true refuses this)"
        )
    if (
        (settings.proxy_hops or not settings.host_is_loopback)
        and settings.issuer == (default_issuer(settings.host, settings.port))
        and settings.issuer_is_loopback
    ):
        # The issuer followed --host and --port (AUTHSERVER_ISSUER unset) on a server meant
        # for other machines (behind a proxy, or on a public address such as the image's
        # 0.0.0.0): tokens and metadata name http://localhost:PORT, which a verifier or a
        # backend elsewhere cannot reach, and which no request through the proxy changes.
        # Unset or set to that very URL: the same tokens, and nothing here tells them apart,
        # so the line says what the issuer is, not that it was left unset.
        log.warning(
            "AUTHSERVER_ISSUER is %s (its value while unset, following --host and --port): "
            "tokens and metadata name it, and only this machine reaches it, though serve %s; "
            "set AUTHSERVER_ISSUER to the URL verifiers use (behind a proxy, its public "
            "https:// URL)",
            settings.issuer,
            "is behind a proxy (AUTHSERVER_PROXY_HOPS)"
            if settings.proxy_hops
            else f"listens on {settings.host}",
        )
    # What authserver doctor reports as a problem: a token anyone may try guesses against,
    # or the metrics scraper holding the admin API.
    for problem in settings.operator_token_problems():
        log.warning("%s", problem)
    # Here, not at the top: it loads Authlib, which no other command needs.
    from authserver.oauth import metadata

    try:
        metadata.validate(settings.issuer)
    except ValueError as exc:
        raise ConfigError(
            f"AUTHSERVER_ISSUER: the metadata document is not valid ({exc})"
        ) from None
    # In the master only: a worker that failed to boot would stop the whole server, while
    # at run time an unreachable limit store fails open (web/limits.py). Imported here: the
    # limits package costs other commands about 0.15 s of start-up.
    from authserver.limits_storage import check_storage

    check_storage(settings)
    svc = container.build(settings)
    try:
        changed = ensure_schema(svc.db, create=True, upgrade=True)
        if changed is not None:
            log.info("database schema %s", changed)
        container.check_key_store(svc)
        try:
            container.check_key_directory(svc)
        except ConfigError as exc:
            # Not refused, as the keys commands are: on a lost key directory serve makes a
            # new key (docs/operations.md, "Backup and restore"). But said: a serve started
            # elsewhere than the others (a relative AUTHSERVER_KEYS_DIR) would sign with a
            # key that no other instance publishes.
            log.warning("%s", exc)
        with svc.unit_of_work():
            svc.key_ring.check_readable()
        # After the check: keys stored encrypted and no passphrase stop start-up there, with
        # the error that says so, not after a warning that they are stored unencrypted.
        _warn_without_passphrase(settings)
        with svc.unit_of_work():
            encrypted = svc.keys.encrypt_stored()
        if encrypted:
            log.info(
                "encrypted %d signing key(s) stored unencrypted before "
                "AUTHSERVER_KEY_PASSPHRASE was set: %s",
                len(encrypted),
                ", ".join(encrypted),
            )
        with svc.unit_of_work():
            # Logs the key it creates, if any (keys.service): one line, not two.
            svc.keys.ensure_current()
        svc.recover_key_records()
        with svc.unit_of_work():
            # Parsed here, once: the workers forked from this process find the keys that
            # sign already parsed (keys/crypto.load_private) instead of each parsing them.
            svc.key_ring.check_readable()
    finally:
        svc.close()


def stop(settings: Settings, message: str, code: int) -> NoReturn:
    """End serve with *message*: the CLI's one error line on stderr or, under
    ``AUTHSERVER_LOG_FORMAT=json``, one JSON record (level ``critical``) like every other
    line serve writes there, so a pipeline that reads JSON lines gets why it stopped."""
    if settings.log_format != "json":
        fail(message, code)
    log.critical("%s", one_line(message))
    sys.exit(code)


def _warn_without_passphrase(settings: Settings) -> None:
    if settings.key_passphrase is None:
        # Unsafe conveniences are loud: whoever reads the key store, or a
        # backup of it, can sign tokens that every sync server accepts.
        where = "in the database" if settings.key_store == "sql" else f"in {settings.keys_dir}"
        log.warning(
            "AUTHSERVER_KEY_PASSPHRASE is not set: private signing keys are stored "
            "UNENCRYPTED %s; anyone who can read them, or a backup of them, can sign tokens "
            "as this server. Set AUTHSERVER_KEY_PASSPHRASE to encrypt them at rest.",
            where,
        )


@click.command()
@settings_options
def serve(**options: Any) -> None:
    """Run the HTTP server.

    Every setting is an option here too (authserver serve --port 9000), as it is on the
    authserver group; an option given here wins.
    """
    try:
        settings = load_settings(**options)
    except ConfigError as exc:
        fail(str(exc), 2)
    # Logging first: every line serve writes from here on, an error that stops it included,
    # is in the configured format.
    configure_logging(settings)
    # Before prometheus_client is imported here or in a worker: it picks single- or
    # multi-process storage once, at import time.
    metrics_dir = prepare_metrics_dir(settings)
    try:
        bind = check_listen(settings.host, settings.port)
        prepare(settings)
    except (ConfigError, KeyStoreError) as exc:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        stop(settings, str(exc), 2)
    except StorageError as exc:
        # Where and why in words (never the driver's text, which can hold the URL).
        shutil.rmtree(metrics_dir, ignore_errors=True)
        stop(settings, f"cannot start: {exc}", 1)
    except Exception as exc:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        stop(settings, f"cannot start: {type(exc).__name__}: {exc}", 1)
    export_options({**state().overrides, **{k: v for k, v in options.items() if v is not None}})
    run_server(settings, metrics_dir, bind)


def check_listen(host: str, port: int) -> str:
    """Refuse at once, in one line, an address the server could not listen on (in use, not
    local, not permitted): granian would report it with a native stack trace.

    :returns: the numeric address to bind, which is what granian takes: *host* as given
        when it is one, else the address the name resolves to (``localhost``: 127.0.0.1),
        the one checked here. granian refused a name with a ``ValueError`` traceback.
    :raises ConfigError: naming the address and the system's reason.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"AUTHSERVER_HOST: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As the server will bind: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or type(exc).__name__}"
            ) from None
    return str(address[0])


def export_options(options: dict[str, Any]) -> None:
    """Put the options given on the command line, and the configuration file, into the
    environment, where each worker process reads its settings (worker_app)."""
    for f in FIELDS:
        value = options.get(f.name)
        if value is not None:
            os.environ[f.env] = str(value)
    config = state().config_file or os.environ.get(CONFIG_ENV)
    if config:
        # Absolute: a worker resolves it again, wherever it runs.
        os.environ[CONFIG_ENV] = os.path.abspath(os.path.expanduser(config))


def prepare_metrics_dir(settings: Settings) -> str:
    """A fresh private directory (mode 0700) for prometheus-client's multiprocess mode, set
    in ``PROMETHEUS_MULTIPROC_DIR`` before the server starts (so before any worker imports
    prometheus_client, which chooses how it stores values at import time). Each run gets
    its own, so no stale values of an earlier run are ever aggregated. An operator-set
    ``PROMETHEUS_MULTIPROC_DIR`` is used as the parent of the fresh directory."""
    parent = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    try:
        path = tempfile.mkdtemp(prefix="authserver-metrics-", dir=parent)  # mode 0700
        os.chmod(path, 0o700)
    except OSError as exc:
        stop(
            settings,
            f"PROMETHEUS_MULTIPROC_DIR: cannot create the metrics directory in "
            f"{parent or tempfile.gettempdir()}: {exc.strerror or type(exc).__name__}",
            2,
        )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


#: Largest request head (request line and headers) the server reads, in bytes; a larger
#: one is refused by the HTTP server before the application sees it. Token requests are
#: small; 64 KiB leaves room for long proxy-added headers.
MAX_REQUEST_HEAD = 64 * 1024

#: Seconds a stopping server waits for requests in flight before it kills its workers.
GRACEFUL_TIMEOUT = 10


def worker_app() -> Any:
    """The WSGI application of one worker process (granian calls this in each worker).

    Each worker builds its own services from the environment (``serve`` exports every
    option given on its command line first), so no database connection crosses a fork,
    then starts its audit batcher and key schedule.
    """
    # Start-up: only workers load the web app and Flask; other commands do not.
    from authserver.web.app import create_app

    settings = Settings.from_env()
    # Secret settings (declared secret in settings.py) leave the worker's environment once
    # read: granian copies the process environment into every request's WSGI environ,
    # where an error reporter or a debug page could show it. Respawned workers are forked
    # from the main process, which keeps them.
    for name in SECRET_ENV:
        os.environ.pop(name, None)
    configure_logging(settings)
    services = container.build(settings)
    app = create_app(services=services)
    # One audit write per 0.25 s per worker instead of one per token.
    services.audit.start_batching(services.unit_of_work)
    # PostgreSQL: one listening connection per worker, so cached clients and keys are
    # dropped when another process changes them instead of being re-validated per request.
    services.start_change_feed()
    if settings.scheduler:
        KeyScheduler(services).start()
    # Everything built so far (modules, the app, the services) lives as long as the
    # worker: move it out of the collector's generations, so a full collection during a
    # request scans only what requests allocate (a shorter pause in the latency tail).
    gc.collect()
    gc.freeze()
    return app


def _log_config(level: str, fmt: str) -> dict[str, Any]:
    """granian's own messages in authserver's format, on stderr like everything else."""
    formatter: dict[str, Any] = (
        {"()": "authserver.logs.JsonFormatter", "logger": "granian"}
        if fmt == "json"
        else {
            "()": "authserver.logs.TextFormatter",
            "fmt": "%(asctime)s %(levelname)s [%(process)d] granian: %(message)s",
        }
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": formatter},
        "handlers": {
            "console": {
                "formatter": "generic",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False}
        },
    }


_SIGTERM = {signal.SIGTERM}


def _hold_sigterm() -> None:
    """Before a fork: SIGTERM waits (blocked) until the child has its handler."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGTERM)


def _release_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGTERM)


def _stop_while_starting() -> None:
    """In a worker just forked: until granian installs the worker's own handler, SIGTERM
    takes the default action, ending the worker. Blocked across the fork, so a signal sent
    meanwhile is delivered here, to this handler, not to the copy of the main process's
    handler that the other at-fork hooks would run it in."""

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop)
    _release_sigterm()


def run_server(settings: Settings, metrics_dir: str, bind: str) -> None:
    """granian (a Rust HTTP server) running the WSGI app in ``workers`` processes with
    ``threads`` Python threads each; chosen by measurement over gunicorn (bench/RESULTS.md,
    "Server and worker model"). Returns when the server has stopped (SIGTERM or SIGINT:
    requests in flight get ``GRACEFUL_TIMEOUT`` seconds)."""
    # Start-up: granian is loaded by ``serve`` alone, not by every other command.
    from granian.constants import HTTPModes
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    workers = settings.workers or os.cpu_count() or 1
    # A worker is forked with the main process's SIGTERM handler, which does nothing there,
    # and granian gives it its own only once the application is built: a stop sent while a
    # worker started was lost, and the main process waited GRACEFUL_TIMEOUT to kill it.
    # Until then a worker has served nothing, so the default action ends it at once.
    os.register_at_fork(
        before=_hold_sigterm, after_in_parent=_release_sigterm, after_in_child=_stop_while_starting
    )
    server = Server(
        f"{__name__}:worker_app",
        factory=True,
        address=bind,
        port=settings.port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,
        websockets=False,
        workers=workers,
        blocking_threads=settings.threads,
        http1_settings=HTTP1Settings(max_buffer_size=MAX_REQUEST_HEAD),
        # A worker that dies (a crash, the OOM killer, kill -9) is replaced.
        respawn_failed_workers=True,
        respawn_interval=1.0,
        workers_kill_timeout=GRACEFUL_TIMEOUT,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=_log_config(settings.log_level, settings.log_format),
        log_access=False,
    )
    log.info(
        "authserver listening on http://%s:%s with %d workers x %d threads; %s",
        f"[{bind}]" if ":" in bind else bind,
        settings.port,
        workers,
        settings.threads,
        settings.describe(),
    )
    try:
        # Workers are forked from this process: the web application's modules (Flask,
        # Authlib, the endpoints) imported here, once, are every worker's, a respawned
        # one's too, instead of being imported again by each. Here, after the metrics
        # directory is set (prometheus_client reads it at import) and only when serving.
        import authserver.web.app  # noqa: F401

        server.serve()
    except ImportError as exc:
        stop(settings, f"cannot start: {type(exc).__name__}: {exc}", 1)
    except (OSError, RuntimeError) as exc:
        # granian reports a failed bind (lost a race with check_listen) as RuntimeError.
        # Its message can carry a native backtrace after the first line.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        stop(settings, f"cannot serve on {settings.host}:{settings.port}: {reason}", 1)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
