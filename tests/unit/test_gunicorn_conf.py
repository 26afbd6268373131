"""gunicorn.conf.py: its settings from the environment, as gunicorn will execute it."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
VARIABLES = (
    "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_KEEPALIVE", "GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER", "FORWARDED_ALLOW_IPS",
)


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def test_defaults(monkeypatch):
    conf = load(monkeypatch)
    assert conf["bind"] == ["0.0.0.0:8000"]
    assert (conf["workers"], conf["threads"]) == (2, 1)
    assert (conf["timeout"], conf["graceful_timeout"], conf["keepalive"]) == (30, 25, 5)
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (0, 0)  # no request-count recycling


def test_a_request_limit_gets_a_jitter_proportional_to_it(monkeypatch):
    conf = load(monkeypatch, GUNICORN_MAX_REQUESTS="1000")
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (1000, 500)
    conf = load(monkeypatch, GUNICORN_MAX_REQUESTS="1000", GUNICORN_MAX_REQUESTS_JITTER="10")
    assert conf["max_requests_jitter"] == 10
    assert conf["worker_tmp_dir"] == ("/dev/shm" if Path("/dev/shm").is_dir() else None)
    assert conf["accesslog"] is None and conf["errorlog"] == "-"
    assert conf["forwarded_allow_ips"] == "127.0.0.1,::1"
    assert conf["control_socket_disable"] is True


def test_every_variable_is_read(monkeypatch):
    conf = load(
        monkeypatch, PORT="9001", WEB_CONCURRENCY="5", GUNICORN_THREADS="4", GUNICORN_TIMEOUT="60",
        GUNICORN_GRACEFUL_TIMEOUT="20", GUNICORN_KEEPALIVE="2", GUNICORN_MAX_REQUESTS="0",
        GUNICORN_MAX_REQUESTS_JITTER="0", FORWARDED_ALLOW_IPS="10.0.0.0/8",
    )
    assert conf["bind"] == ["0.0.0.0:9001"]
    assert (conf["workers"], conf["threads"], conf["timeout"]) == (5, 4, 60)
    assert (conf["graceful_timeout"], conf["keepalive"]) == (20, 2)
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (0, 0)
    assert conf["forwarded_allow_ips"] == "10.0.0.0/8"


def test_every_setting_is_one_gunicorn_knows():
    from gunicorn.config import Config

    known = set(Config().settings)
    conf = runpy.run_path(str(CONF))
    settings = {k for k, v in conf.items() if not k.startswith("_") and not callable(v) and k != "os"}
    assert settings <= known, settings - known


@pytest.mark.parametrize(("name", "value"), [
    ("WEB_CONCURRENCY", "two"), ("WEB_CONCURRENCY", "0"), ("PORT", "0"), ("GUNICORN_TIMEOUT", "-1"),
])
def test_a_bad_value_names_its_variable(monkeypatch, name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        load(monkeypatch, **{name: value})
