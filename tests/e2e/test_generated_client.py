"""A client generated from /v1/openapi.json works as generated, type-checked, against a live server.

openapi-python-client generates ``tenantry_client`` from the document the app serves,
into a temporary directory, with no hand edits (its formatting hooks are switched off:
nothing to fetch, nothing that changes types). mypy (strict) checks the generated
package together with ``generated_client/round_trip.py``, which then runs provision ->
create -> list -> patch -> delete through the client against the app served on loopback.
A document whose fields are optional where the server always sends them, or whose
statuses have no body schema, fails here: the round trip reads them as the types
the document promises.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from app.testing import ADMIN_TOKEN
from tests.stack import serve_in_thread

ROUND_TRIP = Path(__file__).parent / "generated_client" / "round_trip.py"
BIN = Path(sys.executable).parent


def _run(*argv: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MYPYPATH"}}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_generated_client_round_trips_type_checked(app, tmp_path):
    (tmp_path / "openapi.json").write_text(json.dumps(app.test_client().get("/v1/openapi.json").json))
    (tmp_path / "config.yaml").write_text(
        "project_name_override: tenantry-client\npackage_name_override: tenantry_client\npost_hooks: []\n")
    generated = _run(str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--meta", "none",
                     "--output-path", "tenantry_client", "--config", "config.yaml", cwd=tmp_path)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
    shutil.copy(ROUND_TRIP, tmp_path / "round_trip.py")

    checked = _run(sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", os.devnull,
                   "tenantry_client", "round_trip.py", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    with serve_in_thread(app) as base_url:
        ran = _run(sys.executable, "round_trip.py", base_url, ADMIN_TOKEN, f"rt_{uuid.uuid4().hex[:10]}",
                   cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "round trip ok" in ran.stdout
