"""With no DATABASE_URL: an embedded PostgreSQL, migrated, with a dev admin token printed once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from app import create_app
    app = create_app({"INSTANCE_PATH": sys.argv[1], "LOG_LEVEL": "WARNING"})
    client = app.test_client()
    token = app.config["ADMIN_TOKEN"]
    ready = client.get("/readyz")
    created = client.post("/v1/admin/tenants", json={"slug": sys.argv[2], "name": "E"},
                          headers={"Authorization": "Bearer " + token})
    listed = client.get("/v1/admin/tenants", headers={"Authorization": "Bearer " + token})
    print(json.dumps({"ready": ready.status_code, "created": created.status_code,
                      "slugs": [t["slug"] for t in listed.json["items"]]}))
    """
)


def run(instance: Path, slug: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(instance), slug],
        capture_output=True, text=True, timeout=120, check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(instance.parent)},
    )


def test_embedded_server_persists_data_and_prints_the_token_once(tmp_path: Path):
    instance = tmp_path / "instance"
    first = run(instance, "first")
    token = (instance / "admin_token").read_text().strip()
    assert token in first.stderr  # printed once...
    assert '"ready": 200' in first.stdout and '"created": 201' in first.stdout
    second = run(instance, "second")
    assert token not in second.stderr  # ...and only once
    assert '"slugs": ["first", "second"]' in second.stdout  # data survived the restart
    assert oct((instance / "admin_token").stat().st_mode & 0o777) == "0o600"
