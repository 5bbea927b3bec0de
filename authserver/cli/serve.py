"""``authserver serve``: the production HTTP server (gunicorn, one worker per core).

Before any worker starts, in the master process: validate the configuration, bring the
database schema to head (under the migration lock), check that the stored keys can be
decrypted, and create the first signing key on an empty store. Each worker then builds its
own services (no database connection crosses a fork) and runs the key schedule.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from authserver import container
from authserver.cli.output import fail
from authserver.errors import ConfigError
from authserver.errors import KeyStoreError
from authserver.settings import FIELDS
from authserver.settings import Settings

log = logging.getLogger("authserver")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def prepare(settings: Settings) -> None:
    """Schema, key store and first key, once, before the workers start."""
    from authserver.cli.db import ensure_schema

    if settings.issuer_is_http and not settings.issuer_is_loopback:
        # Unsafe conveniences are loud (DESIGN.md §3.8): tokens will name a plain-http
        # issuer, and metadata will send verifiers to fetch keys over plain http.
        log.warning(
            "AUTHSERVER_ISSUER is a plain http:// URL on a non-loopback host; use https "
            "in production (AUTHSERVER_PRODUCTION=true refuses this)"
        )
    if settings.key_passphrase is None:
        log.warning(
            "AUTHSERVER_KEY_PASSPHRASE is not set: private signing keys are stored unencrypted"
        )
    from authserver.web.limits import check_storage

    # In the master only: a worker that failed to boot would stop the whole server, while
    # at run time an unreachable limit store fails open (web/limits.py).
    check_storage(settings)
    svc = container.build(settings)
    try:
        ensure_schema(svc, upgrade_existing=True)
        with svc.unit_of_work():
            svc.keys.check_readable()
        with svc.unit_of_work():
            created = svc.keys.ensure_current()
        if created is not None:
            log.info("created the first signing key %s", created.kid)
    finally:
        svc.close()


def _options(func: Any) -> Any:
    """One option per AUTHSERVER_* variable, generated from settings.FIELDS."""
    for f in reversed(FIELDS):
        flag = "--" + f.name.replace("_", "-")
        func = click.option(
            flag, f.name, default=None, type=str, metavar="VALUE", help=f"{f.help} [env {f.env}]"
        )(func)
    return func


@click.command()
@_options
def serve(**options: Any) -> None:
    """Run the HTTP server."""
    try:
        settings = Settings.from_env(**{k: v for k, v in options.items() if v is not None})
    except ConfigError as exc:
        fail(str(exc), 2)
    # First, before anything imports prometheus_client (prepare() does, through the web
    # package): it picks single- or multi-process storage once, at import time.
    metrics_dir = prepare_metrics_dir()
    try:
        configure_logging(settings.log_level)
        prepare(settings)
    except (ConfigError, KeyStoreError) as exc:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        fail(str(exc), 2)
    except Exception as exc:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        fail(f"cannot start: {type(exc).__name__}: {exc}", 1)
    run_gunicorn(settings, metrics_dir)


def prepare_metrics_dir() -> str:
    """A fresh private directory (mode 0700) for prometheus-client's multiprocess mode, set
    in ``PROMETHEUS_MULTIPROC_DIR`` before gunicorn starts (so before any worker imports
    prometheus_client, which chooses how it stores values at import time). Each run gets
    its own, so no stale values of an earlier run are ever aggregated. An operator-set
    ``PROMETHEUS_MULTIPROC_DIR`` is used as the parent of the fresh directory."""
    parent = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    try:
        path = tempfile.mkdtemp(prefix="authserver-metrics-", dir=parent)  # mode 0700
        os.chmod(path, 0o700)
    except OSError as exc:
        fail(
            f"PROMETHEUS_MULTIPROC_DIR: cannot create the metrics directory in "
            f"{parent or tempfile.gettempdir()}: {exc.strerror or type(exc).__name__}",
            2,
        )
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook, in the master: a dead worker's live gauges are dropped."""
    from authserver.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def run_gunicorn(settings: Settings, metrics_dir: str) -> None:
    from gunicorn.app.base import BaseApplication

    workers = settings.workers or os.cpu_count() or 1

    def _on_exit(server: Any) -> None:
        shutil.rmtree(metrics_dir, ignore_errors=True)

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            config = {
                "bind": [f"{settings.host}:{settings.port}"],
                "workers": workers,
                "worker_class": settings.worker_class,
                "threads": settings.threads,
                "keepalive": 5,
                "timeout": 30,
                "graceful_timeout": 10,
                "accesslog": None,
                "loglevel": settings.log_level,
                "limit_request_line": 8190,
                "limit_request_fields": 50,
                "proc_name": "authserver",
                # gunicorn 24+ opens a control socket in $HOME; several instances on one
                # host would collide on it, and nothing here uses it.
                "control_socket_disable": True,
                # Worker heartbeat files on tmpfs, not on a possibly slow disk.
                "worker_tmp_dir": "/dev/shm" if Path("/dev/shm").is_dir() else None,  # noqa: S108
                # prometheus-client multiprocess mode (authserver.metrics).
                "child_exit": _child_exit,
                "on_exit": _on_exit,
            }
            for key, value in config.items():
                # Settings a given gunicorn release does not know (control_socket_disable
                # appeared with the control socket) are skipped rather than fatal.
                if value is not None and key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            from authserver.scheduler import KeyScheduler
            from authserver.web.app import create_app

            services = container.build(settings)
            app = create_app(services=services)
            # One audit write per 0.25 s per worker instead of one per token.
            services.audit.start_batching(services.unit_of_work)
            if settings.scheduler:
                KeyScheduler(services).start()
            return app

    log.info(
        "authserver listening on http://%s:%s with %d workers (issuer %s)",
        settings.host,
        settings.port,
        workers,
        settings.issuer,
    )
    Application().run()
