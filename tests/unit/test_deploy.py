"""docker-compose.yml cannot run here (no Docker engine), so its wiring is checked
statically; tests/e2e/test_multi_instance.py runs the same topology with real processes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from authserver.settings import FIELDS

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_two_instances_share_one_database_and_the_sql_key_store() -> None:
    services = _compose()["services"]
    instances = [services["authserver-1"], services["authserver-2"]]
    for instance in instances:
        env = instance["environment"]
        assert env["AUTHSERVER_KEY_STORE"] == "sql"
        assert env["AUTHSERVER_PROXY_HOPS"] == "1"
        assert instance["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "readyz" in " ".join(instance["healthcheck"]["test"])
    assert instances[0]["environment"] == instances[1]["environment"]
    assert "healthcheck" in services["postgres"]


def test_every_variable_is_a_real_setting() -> None:
    known = {f.env for f in FIELDS}
    env = _compose()["services"]["authserver-1"]["environment"]
    assert set(env) <= known, set(env) - known


def test_the_proxy_balances_over_both_instances() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstreams = re.findall(r"server (authserver-\d):8000", conf)
    assert sorted(upstreams) == ["authserver-1", "authserver-2"]
    assert "X-Forwarded-Proto" in conf
    proxy = _compose()["services"]["proxy"]
    assert set(proxy["depends_on"]) == {"authserver-1", "authserver-2"}


def test_the_image_runs_serve_as_an_unprivileged_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER authserver$", dockerfile, re.MULTILINE)
    assert 'CMD ["authserver", "serve"]' in dockerfile
