"""The request-path benchmark's baselines do what bench/single_tenant.py says they do.

The ``single`` build is the baseline the tenancy overhead is measured against, so it
must still authenticate (a wrong key is refused, a viewer key cannot write) while
serving one fixed schema whatever the key's tenant; ``bare`` checks nothing. Building
either removes the binding listeners from the process-wide session, so each runs in
a subprocess of its own, never in the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Builds the single-tenant app in a fresh interpreter and reports what each request got.
SCRIPT = """
import json, sys
from app.testing import make_test_app
from app.tenancy.context import TenantBinding
from bench.single_tenant import single_tenant

url, tenant_id, slug, authenticate, requests = json.loads(sys.argv[1])
app = single_tenant(make_test_app(url, TESTING=False), TenantBinding.for_slug(tenant_id, slug), authenticate)
client = app.test_client()
out = []
for method, token, body in requests:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.open("/v1/repositories", method=method, headers=headers, json=body)
    names = [r["name"] for r in response.get_json().get("items", [])] if response.status_code == 200 else None
    out.append([response.status_code, names])
print(json.dumps(out))
"""


def serve(app, tenant, requests, *, authenticate: bool) -> list[list]:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    args = json.dumps([url, tenant.tenant_id, tenant.slug, authenticate, requests])
    done = subprocess.run([sys.executable, "-c", SCRIPT, args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def viewer_token(client, tenant) -> str:
    response = client.post("/v1/api-keys", json={"role": "viewer"}, headers=tenant.auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


def test_the_single_build_checks_keys_and_serves_its_one_schema(app, client, make_tenant):
    fixed, other = make_tenant(), make_tenant()
    for tenant, name in ((fixed, "in-fixed"), (other, "in-other")):
        response = client.post("/v1/repositories", json={"github_repo_id": 1, "owner": "o", "name": name},
                               headers=tenant.auth)
        assert response.status_code == 201, response.get_json()
    wrong_secret = fixed.token.rsplit("_", 1)[0] + "_" + "x" * 43
    viewer = viewer_token(client, fixed)

    got = serve(app, fixed, [
        ["GET", fixed.token, None],
        ["GET", other.token, None],  # another tenant's key: still the one fixed schema
        ["GET", wrong_secret, None],
        ["GET", None, None],
        ["POST", viewer, {"github_repo_id": 2, "owner": "o", "name": "by-viewer"}],
    ], authenticate=True)

    assert got == [[200, ["in-fixed"]], [200, ["in-fixed"]], [401, None], [401, None], [403, None]]


def test_the_bare_build_checks_nothing(app, make_tenant):
    fixed = make_tenant()
    got = serve(app, fixed, [["GET", None, None], ["GET", "tnt_000000000000_nosuchsecret", None]],
                authenticate=False)
    assert got == [[200, []], [200, []]]
