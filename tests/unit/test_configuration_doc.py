"""docs/configuration.md names every variable the application, gunicorn.conf.py and compose.yaml read."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import SETTINGS

ROOT = Path(__file__).resolve().parents[2]


def documented() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", (ROOT / "docs/configuration.md").read_text(), re.M))


def test_every_application_setting_is_documented():
    missing = {s.env for s in SETTINGS} - documented()
    assert not missing, f"add to docs/configuration.md: {sorted(missing)}"


def test_every_variable_gunicorn_conf_reads_is_documented():
    source = (ROOT / "gunicorn.conf.py").read_text()
    read = set(re.findall(r"""(?:_env_int|os\.environ\.get)\(\s*["']([A-Z][A-Z0-9_]*)["']""", source))
    assert {"PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"} <= read  # the pattern does find them
    missing = read - documented()
    assert not missing, f"add to docs/configuration.md: {sorted(missing)}"


def test_every_variable_compose_interpolates_is_documented():
    read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "compose.yaml").read_text()))
    assert "POSTGRES_PASSWORD" in read
    missing = read - documented()
    assert not missing, f"add to docs/configuration.md: {sorted(missing)}"
