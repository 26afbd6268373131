"""docs/extending.md, followed by a machine: when the guide and the code drift apart, this fails.

The project is copied into a temporary directory. Two tenants are provisioned there
first (the existing tenants the fan-out must migrate). Then every block the guide marks
with an HTML comment ``<!-- guide: ACTION [PATH] -->`` is applied, literally and in order:

- ``create PATH``: the block becomes the file;
- ``append PATH``: the block is appended to the file;
- ``patch PATH``: a ``diff`` block; its ``-`` lines must be found together in the file,
  and are replaced by its ``+`` lines;
- ``run``: each command line, in the copy: ``python3 dev.py flask ARGS`` runs as
  ``python -m flask ARGS`` and ``python3 dev.py test ARGS`` as ``python -m pytest ARGS``
  (the same commands, without creating another virtualenv).

Last, the copy is served by gunicorn and the new endpoint is called over HTTP as both
existing tenants.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import SETTINGS
from app.testing import ADMIN_TOKEN, fresh_database
from tests.stack import gunicorn

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "extending.md"
MARKED_BLOCK = re.compile(r"<!-- guide: (\w+)(?: (\S+))? -->\n```[\w-]*\n(.*?)```", re.DOTALL)

pytestmark = pytest.mark.db


def guide_steps() -> list[tuple[str, str | None, str]]:
    """(action, path, block) for every marked block of the guide, in order."""
    return [(m.group(1), m.group(2), m.group(3)) for m in MARKED_BLOCK.finditer(GUIDE.read_text())]


def test_the_guide_has_every_kind_of_step():
    actions = [action for action, _, _ in guide_steps()]
    assert {"create", "append", "patch", "run"} <= set(actions), actions
    # Each marker is followed by its block: none is left unapplied by a typo.
    assert len(actions) == GUIDE.read_text().count("<!-- guide: ")


def apply_patch(path: Path, diff: str) -> None:
    removed = "\n".join(line[1:] for line in diff.splitlines() if line.startswith("-"))
    added = "\n".join(line[1:] for line in diff.splitlines() if line.startswith("+"))
    text = path.read_text()
    assert text.count(removed) == 1, f"the guide's patch no longer applies to {path.name}:\n{removed}"
    path.write_text(text.replace(removed, added))


def command_of(line: str) -> list[str]:
    words = shlex.split(line)
    assert words[:2] == ["python3", "dev.py"] and words[2] in {"flask", "test"}, line
    if words[2] == "flask":
        return [sys.executable, "-m", "flask", *words[3:]]
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *words[3:]]


def test_following_the_guide_adds_a_migrated_served_tested_resource(app, tenantry_database_url, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".git", ".venv", "instance", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", ".mypy_cache",
        "*.jsonl.gz", "bench"))
    with fresh_database(tenantry_database_url) as url:
        env = {k: v for k, v in os.environ.items() if k not in {s.env for s in SETTINGS}}
        env.update(DATABASE_URL=url, FLASK_APP=str(project / "wsgi.py"), INSTANCE_PATH=str(tmp_path / "instance"),
                   PYTHONPATH=str(project), TEST_DATABASE_URL=tenantry_database_url,
                   ADMIN_TOKEN=ADMIN_TOKEN, PYTHONDONTWRITEBYTECODE="1")

        def run(argv: list[str]) -> str:
            done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{shlex.join(argv[1:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            return done.stdout

        run([sys.executable, "-m", "flask", "db", "upgrade"])
        keys = {}
        for slug in ("acme", "globex"):
            created = run([sys.executable, "-m", "flask", "tenants", "create", slug, "--name", slug.title()])
            keys[slug] = re.search(r"tnt_[\w-]+", created).group(0)

        for action, path, block in guide_steps():
            if action == "create":
                assert not (project / path).exists(), f"{path} exists already: the guide would overwrite it"
                (project / path).write_text(block)
            elif action == "append":
                with open(project / path, "a") as target:
                    target.write(block)
            elif action == "patch":
                apply_patch(project / path, block)
            elif action == "run":
                for line in block.strip().splitlines():
                    run(command_of(line))
            else:
                raise AssertionError(f"unknown step {action!r} in the guide")

        [generated] = (project / "tenant_migrations" / "versions").glob("*labels*.py")
        assert re.search(r"op\.create_table\(\s*['\"]labels['\"]", generated.read_text()), generated.read_text()
        status = json.loads(run([sys.executable, "-m", "flask", "tenants", "status", "--json"]))
        assert status["behind"] == 0, status  # both existing tenants were migrated by the guide's fan-out

        with gunicorn(url, tmp_path, root=project) as server:
            for slug, key in keys.items():
                status_code, body = call(server.port, "POST", "/v1/labels", key, {"name": "bug", "color": "D73A4A"})
                assert status_code == 201 and body["color"] == "d73a4a", body
                status_code, body = call(server.port, "GET", "/v1/labels", key)
                assert status_code == 200 and [label["name"] for label in body["items"]] == ["bug"], (slug, body)
            status_code, spec = call(server.port, "GET", "/v1/openapi.json")
            assert {"/v1/labels", "/v1/labels/{label_id}"} <= set(spec["paths"]), sorted(spec["paths"])


def call(port: int, method: str, path: str, token: str | None = None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()
