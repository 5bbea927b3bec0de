"""docker-compose.yml as written, without a Docker engine: each authserver service's exact
command (``command:`` or the image's ``CMD``), with exactly the environment compose would
give its container (the image's ``ENV``, then the service's ``environment`` after compose's
``${VAR:-default}`` interpolation, entries without a value passed through from the caller's
environment or left out), against a real PostgreSQL; each instance must become ready.

What stands in for Docker, and only that: the service name ``postgres`` in the database URL
is the test's PostgreSQL (a fresh database with the role the ``postgres`` service would
create), each container's own ``0.0.0.0:8000`` is ``127.0.0.1`` and a free port, and the
image's working directory is a temporary one. The bundled nginx is checked statically
(there is no nginx here): the public side does not forward ``/admin/*`` or ``/metrics``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL
from tests.conftest import require_postgres
from tests.helpers import AUTHSERVER
from tests.helpers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: What the README tells a new user to set, and nothing else.
PASSPHRASE_ONLY = {"AUTHSERVER_KEY_PASSPHRASE": "compose-test-passphrase-1f7b"}
ADMIN_TOKEN = "compose-test-admin-token-8c2e5a9d1b4f"
METRICS_TOKEN = "compose-test-metrics-token-3a6d0e7c9f2b"


# -- compose's interpolation (compose-spec, "Interpolation") ---------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(Exception):
    """What ``docker compose`` would refuse to start with (``${VAR:?message}``)."""


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        value = environ.get(name)
        op, arg = match.group("op"), match.group("arg") or ""
        unset_or_empty = not value
        missing = unset_or_empty if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"{name}: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    if "${" in text and re.search(r"\$\{[^}]*\$\{", text):
        raise NotImplementedError("nested interpolation is not used by this compose file")
    return _VARIABLE.sub(one, text)


def _interpolate_all(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, dict):
        return {k: _interpolate_all(v, environ) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_all(v, environ) for v in node]
    return node


def compose_services(environ: Mapping[str, str]) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = _interpolate_all(data["services"], environ)
    return services


def container_environment(service: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """The service's ``environment`` as its container sees it: ``VAR:`` (no value) and a
    bare ``VAR`` list entry take the caller's value, or are left out when it has none."""
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) if "=" in item else (item, None) for item in declared)
    env: dict[str, str] = {}
    for name, value in declared.items():
        if value is None:
            if name in environ:
                env[name] = environ[name]
            continue
        env[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


# -- the image (Dockerfile: the last stage's ENV, WORKDIR and CMD) ---------------------------


def image() -> tuple[dict[str, str], str, list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    env: dict[str, str] = {}
    workdir = "/"
    cmd: list[str] = []
    for line in lines[last_from:]:
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "ENV":
            words = shlex.split(rest)
            if all("=" in w for w in words):
                env.update(w.split("=", 1) for w in words)  # type: ignore[arg-type]
            else:
                env[words[0]] = " ".join(words[1:])
        elif instruction.upper() == "WORKDIR":
            workdir = rest.strip()
        elif instruction.upper() == "CMD":
            cmd = json.loads(rest)
    return env, workdir, cmd


def image_healthcheck() -> str:
    """The command of the image's ``HEALTHCHECK`` (shell form), run by ``/bin/sh -c``."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    line = next(ln.strip() for ln in text.splitlines() if ln.startswith("HEALTHCHECK"))
    command = line.split(" CMD ", 1)[1].strip()
    assert not command.startswith("["), "the image's HEALTHCHECK is in shell form"
    return command


# -- PostgreSQL standing in for the postgres service -------------------------------------------


@pytest.fixture
def postgres_service() -> Iterator[tuple[str, int, str]]:
    """(host, port, database): a fresh database, owned by the role the compose file's
    ``postgres`` service would create, on the test PostgreSQL."""
    require_postgres()
    pg = compose_services(PASSPHRASE_ONLY)["postgres"]["environment"]
    user, password = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"]
    database = f"compose_{secrets.token_hex(6)}"
    admin_url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        if not exists:
            # Another test running in parallel may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(user), sql.Literal(password)
                    )
                )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(user)
            )
        )
    parsed = make_url(admin_url)
    try:
        yield parsed.host or "127.0.0.1", parsed.port or 5432, database
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


def _as_on_this_host(
    env: dict[str, str], postgres: tuple[str, int, str], workdir: str, tmp: Path, port: int
) -> dict[str, str]:
    """Only the container-to-host mapping described in the module docstring."""
    host, pg_port, database = postgres
    url = make_url(env["AUTHSERVER_DATABASE_URL"])
    assert url.host == "postgres", "the instances must reach the postgres service by name"
    env["AUTHSERVER_DATABASE_URL"] = url.set(
        host=host, port=pg_port, database=database
    ).render_as_string(hide_password=False)
    assert env.get("AUTHSERVER_HOST") == "0.0.0.0"  # noqa: S104 - the container's own address
    assert env.get("AUTHSERVER_PORT") == "8000"
    env["AUTHSERVER_HOST"], env["AUTHSERVER_PORT"] = "127.0.0.1", str(port)
    for name, value in env.items():
        if value == workdir or value.startswith(workdir + "/"):
            env[name] = str(tmp) + value[len(workdir) :]
    return env


@contextmanager
def _run_compose(
    caller: dict[str, str], postgres: tuple[str, int, str], tmp_path: Path
) -> Iterator[list[tuple[str, str, subprocess.Popen[bytes], Path, dict[str, str]]]]:
    """Each authserver service started: (name, base URL, process, log, its environment)."""
    services = compose_services(caller)
    image_env, workdir, cmd = image()
    started: list[tuple[str, str, subprocess.Popen[bytes], Path, dict[str, str]]] = []
    try:
        for name, service in services.items():
            if not name.startswith("authserver"):
                continue
            command = service.get("command") or cmd
            if isinstance(command, str):
                command = shlex.split(command)
            assert command[0] == "authserver", command
            env = {**image_env, **container_environment(service, caller)}
            home = tmp_path / name
            home.mkdir()
            port = free_port()
            env = _as_on_this_host(env, postgres, workdir, home, port)
            # The container's environment and nothing else (PATH finds this venv's authserver).
            full = {"PATH": os.environ["PATH"], "HOME": str(home), **env}
            log = home / "serve.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [AUTHSERVER, *command[1:]],
                    cwd=home,
                    env=full,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append((name, f"http://127.0.0.1:{port}", proc, log, full))
        assert len(started) == 2, [s[0] for s in started]
        yield started
    finally:
        for _, _, proc, _, _ in started:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for _, _, proc, _, _ in started:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=5)


def _wait_ready(name: str, base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{name} did not become ready:\n{log.read_text()[-2000:]}")


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", env) == "v d d"
    assert interpolate("${SET-d} ${EMPTY-d} ${UNSET-d}", env) == "v  d"
    assert interpolate("$SET ${SET} $$SET ${UNSET}", env) == "v v $SET "
    assert interpolate("${SET:+x} ${EMPTY:+x} ${EMPTY+x}", env) == "x  x"
    with pytest.raises(InterpolationError, match="UNSET: needed"):
        interpolate("${UNSET:?needed}", env)
    with pytest.raises(InterpolationError):
        interpolate("${EMPTY:?needed}", env)


def test_compose_refuses_to_start_without_the_passphrase() -> None:
    with pytest.raises(InterpolationError, match="AUTHSERVER_KEY_PASSPHRASE"):
        compose_services({})


@pytest.mark.parametrize(
    "caller",
    [
        PASSPHRASE_ONLY,
        {
            **PASSPHRASE_ONLY,
            "AUTHSERVER_ADMIN_TOKEN": ADMIN_TOKEN,
            "AUTHSERVER_METRICS_TOKEN": METRICS_TOKEN,
        },
    ],
    ids=["passphrase-only", "with-operator-tokens"],
)
def test_each_instance_becomes_ready(
    caller: dict[str, str], postgres_service: tuple[str, int, str], tmp_path: Path
) -> None:
    with _run_compose(caller, postgres_service, tmp_path) as started:
        for name, base_url, proc, log, env in started:
            _wait_ready(name, base_url, proc, log)
            # What Docker runs in the container: the image's HEALTHCHECK (shell form) and
            # the service's healthcheck (exec form), with the container's environment.
            service = compose_services(caller)[name]
            for check in (
                ["/bin/sh", "-c", image_healthcheck()],
                service["healthcheck"]["test"][1:],
            ):
                done = subprocess.run(check, env=env, capture_output=True, timeout=30, check=False)
                assert done.returncode == 0, (name, check, done.stderr)
        # One database, one key set: both instances publish the same keys.
        jwks = [
            requests.get(b + "/.well-known/jwks.json", timeout=5).json()
            for _, b, _, _, _ in started
        ]
        assert jwks[0] == jwks[1]
        assert len(jwks[0]["keys"]) == 1
        for _, base_url, _, _, _ in started:
            admin = requests.get(
                base_url + "/admin/clients",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=5,
            )
            scrape = requests.get(
                base_url + "/metrics",
                headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
                timeout=5,
            )
            if "AUTHSERVER_ADMIN_TOKEN" in caller:
                assert admin.status_code == 200, admin.text
                assert scrape.status_code == 200
            else:
                assert admin.status_code == 404
                assert scrape.status_code == 404
        for _, _, _, log, _ in started:
            # Encrypted at rest: no warning about plaintext keys.
            assert "UNENCRYPTED" not in log.read_text()


# -- the proxy -----------------------------------------------------------------------------


def _server_blocks(conf: str) -> list[str]:
    blocks = []
    for match in re.finditer(r"^server\s*\{", conf, re.MULTILINE):
        depth, i = 0, match.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(conf[i], 0)
            if depth == 0:
                break
            i += 1
        blocks.append(conf[match.start() : i + 1])
    return blocks


def test_the_public_side_of_the_proxy_hides_the_operator_endpoints() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    proxy = compose_services(PASSPHRASE_ONLY)["proxy"]
    published: dict[str, str] = {}
    for mapping in proxy["ports"]:
        parts = str(mapping).split(":")
        host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"  # noqa: S104
        published[parts[-1]] = host_ip
    blocks = {re.search(r"listen\s+(\d+)", b).group(1): b for b in _server_blocks(conf)}  # type: ignore[union-attr]
    assert set(blocks) == set(published), (blocks.keys(), published)
    # The operator paths, at the root and under an issuer's path (AUTHSERVER_ISSUER=
    # https://example.com/auth: authserver serves /auth/admin/clients too, and a location
    # anchored at the root forwarded it), and public paths that must still be forwarded.
    operator = ["/admin/clients", "/admin", "/metrics", "/ADMIN/keys", "/auth/admin/clients"]
    operator += ["/auth/metrics", "/a/b/admin/audit"]
    public = ["/token", "/.well-known/jwks.json", "/auth/token", "/statuslists/1"]
    public += ["/administrator", "/auth/metricsx", "/openapi.json"]
    for port, block in blocks.items():
        if published[port] in ("127.0.0.1", "::1", "[::1]"):
            continue
        hidden = re.findall(r"location ~\*\s+(\S+)\s*\{[^}]*return 404", block)
        assert hidden, f"port {port} is published on {published[port]} and forwards /admin"
        # nginx's ~* is a case-insensitive PCRE search, which Python's re reads the same.
        refused = [p for p in operator + public if any(re.search(h, p, re.I) for h in hidden)]
        assert refused == operator, f"port {port} refuses {refused}, not {operator}"
    # The operator side exists, and only on loopback.
    assert any(ip == "127.0.0.1" for ip in published.values())
