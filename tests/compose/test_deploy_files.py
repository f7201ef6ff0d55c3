"""docker-compose.yml and deploy/nginx/ agree with each other and with config.yaml (no Docker needed).

Only nginx (and the operator's console) is published, on the loopback, to the port its server block listens on; the inference service runs
as replicas and is not published; the monitor's replay goes through nginx; nginx's body limit is not below
deployment.max_body_bytes (so the service's own 413 is the one clients see), it never retries a POST that
reached a replica, and it lets go of idle upstream connections before uvicorn closes them.
"""

from __future__ import annotations

import re

import yaml

from services.inference.__main__ import uvicorn_config
from shared.config import load_settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
NGINX_CONF = (ROOT / "deploy" / "nginx" / "clockwork.conf").read_text()
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _directives(name: str) -> list[str]:
    """The arguments of every `name ...;` in clockwork.conf, comments left out."""
    text = "\n".join(line.split("#", 1)[0] for line in NGINX_CONF.splitlines())
    return [m.strip() for m in re.findall(rf"(?:^|[;{{}}\s]){name}\s+([^;]*);", text)]


def _size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * SIZE_UNITS[unit.lower()]


def test_only_nginx_is_published_on_the_loopback_to_the_port_it_listens_on():
    published = {name: svc["ports"] for name, svc in SERVICES.items() if svc.get("ports")}
    assert sorted(published) == ["console", "nginx"], published  # the console: tests/console/test_deploy.py
    (mapping,) = published["nginx"]
    host, _, container = mapping.rpartition(":")
    assert host.startswith("127.0.0.1:")
    assert _directives("listen")[0].split()[0] == container


def test_inference_runs_as_replicas_reached_through_nginx():
    inference = SERVICES["inference"]
    assert inference["deploy"]["replicas"] >= 2
    assert "container_name" not in inference and "hostname" not in inference  # each replica names itself
    assert "CLOCKWORK_INSTANCE_ID" not in (inference.get("environment") or {})
    replay = COMPOSE["x-service"]["environment"]["CLOCKWORK_REPLAY_URL"]
    assert replay == f"http://nginx:{_directives('listen')[0].split()[0]}"
    assert "server inference:8000" in " ".join(f"server {s}" for s in _directives("server"))
    mounted = {v.split(":")[0] for v in SERVICES["nginx"]["volumes"]}
    assert all((ROOT / m).is_file() for m in mounted), mounted


def test_nginx_body_limit_is_not_below_the_services():
    (limit,) = _directives("client_max_body_size")
    settings = load_settings(ROOT / "config.yaml")
    assert _size(limit) >= settings.deployment.max_body_bytes


def test_nginx_retries_only_requests_no_replica_received():
    (retry,) = _directives("proxy_next_upstream")
    assert set(retry.split()) == {"error", "timeout"}  # never non_idempotent, never http_5xx
    assert _directives("proxy_next_upstream_tries") == ["2"]


def test_nginx_closes_idle_upstream_connections_before_uvicorn_does():
    (keepalive,) = _directives("keepalive_timeout")
    uvicorn_keepalive = uvicorn_config(None, host="127.0.0.1", port=8000).timeout_keep_alive
    assert float(keepalive.rstrip("s")) < uvicorn_keepalive
    assert _directives("proxy_http_version") == ["1.1"] and _directives("proxy_set_header")[0] == 'Connection ""'
