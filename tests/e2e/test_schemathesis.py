"""The API against its own OpenAPI document, with schemathesis and every one of its checks.

Schemathesis' engine (what ``schemathesis run --checks all`` runs) loads
``/v1/openapi.json`` from the app served on loopback and goes through all its phases
(examples, coverage, fuzzing, stateful) with every check on: no 5xx; documented
status, content type, headers and body; schema-valid requests accepted and invalid
ones refused; refused without credentials; 405 with ``Allow`` for undocumented
methods; a deleted resource gone, a created one there. Two runs:

- the tenant API (and the probes) with a tenant admin API key, in the session's
  database: the tenant drives the run on an unlimited plan;
- the admin API with the admin token, in a scratch database of its own
  (``fresh_database``): it provisions, suspends and deletes tenants and changes plans.

Each run must end with 0 failures and 0 errors of any kind. The only setting beyond
"all checks": ``positive_data_acceptance`` also takes a documented 422 on the operations
whose inputs have rules a JSON Schema cannot say (listed in ``SEMANTIC_422`` with why);
everywhere else a schema-valid request must be accepted.

Bounded for CI: a fixed number of examples per operation and a fixed seed.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import events, from_schema

from app import public_migrations
from app.extensions import db
from app.testing import ADMIN_TOKEN, fresh_database
from tests.stack import serve_in_thread

MAX_EXAMPLES = 25
SEED = 21

#: Operations where a schema-valid request can be refused with 422 by a rule the document
#: states in words: a cursor this API did not issue, a plan that does not exist, a
#: reserved slug, a time range ending before it starts.
SEMANTIC_422 = {
    "GET /v1/repositories": "a cursor the API did not issue",
    "GET /v1/api-keys": "a cursor the API did not issue",
    "GET /v1/audit-events": "a cursor the API did not issue; since not before until",
    "GET /v1/members": "a cursor the API did not issue",
    "POST /v1/members": "an email address this API does not take (quoted, IP literal, no dot in the domain); "
                        "a display name with no visible character",
    "PATCH /v1/members/{member_id}": "a display name with no visible character",
    "POST /v1/invitations/accept": "with a key, neither subject nor email; an email address this API does not take",
    "GET /v1/tenant/usage": "to before from; a range of more than 36 months",
    "GET /v1/admin/tenants": "a cursor the API did not issue",
    "GET /v1/admin/migrations": "a cursor the API did not issue",
    "GET /v1/admin/migrations/{run_id}": "a cursor the API did not issue",
    "GET /v1/admin/audit-events": "a cursor the API did not issue; since not before until",
    "POST /v1/admin/tenants": "an unknown plan; a reserved slug; an owner_email this API does not take",
    "PATCH /v1/admin/tenants/{slug}": "an unknown plan",
    "GET /v1/admin/tenants/{slug}/members": "a cursor the API did not issue",
    "POST /v1/admin/tenants/{slug}/github-sync": "a tenant without a GitHub installation (409), or no App configured",
}


@dataclass
class Report:
    operations: set[str] = field(default_factory=set)
    cases: collections.Counter = field(default_factory=collections.Counter)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.operations)} operations, {sum(self.cases.values())} requests {dict(self.cases)}, "
                f"statuses {dict(sorted(self.statuses.items()))}; "
                f"{len(self.failures)} failures, {len(self.errors)} errors:\n" + "\n".join(self.failures + self.errors))


def config(auth: dict[str, dict[str, str]], **filters: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "checks": {"enabled": True},  # --checks all
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "auth": {"openapi": auth},
        "operations": [
            {"include-name": name, "checks": {"positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}}}
            for name in SEMANTIC_422
        ],
        **filters,
    })


def run(base_url: str, cfg: schemathesis.Config, *, exclude: str) -> Report:
    """Every operation whose path ``exclude`` does not match, every phase and check; what came of it."""
    schema = schemathesis.openapi.from_url(f"{base_url}/v1/openapi.json", config=cfg).exclude(path_regex=exclude)
    report = Report()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if " /" in recorder.label:  # an operation ("Stateful tests" is the stateful phase's)
                report.operations.add(recorder.label)
            report.cases[event.phase.name.lower()] += len(recorder.cases)
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    report.statuses[interaction.response.status_code] += 1
            for checks in recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        report.failures.append(f"{recorder.label}: {check.name}: {failure.title}\n"
                                               f"  {failure.message[:500]}\n  {check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    return report


@pytest.fixture
def spare_the_driver_key() -> Iterator[dict[str, Any]]:
    """A ``before_call`` hook: the run never revokes the key it drives with (it would 401 from then on)."""
    protected: dict[str, Any] = {}

    def before_call(context, case, kwargs) -> None:  # noqa: ANN001 - schemathesis' hook signature
        params = case.path_parameters or {}
        if case.method.upper() == "DELETE" and case.operation.path == "/v1/api-keys/{key_id}" \
                and str(params.get("key_id")) == str(protected.get("key_id")):
            params["key_id"] = 2**40

    schemathesis.hook(before_call)
    yield protected
    from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

    GLOBAL_HOOK_DISPATCHER.unregister(before_call)


def test_the_tenant_api_and_the_probes_keep_their_contract(app, make_tenant, make_plan, spare_the_driver_key):
    driver = make_tenant(plan=make_plan())  # unlimited: no quota, no rate limit
    [key] = app.test_client().get("/v1/api-keys", headers=driver.auth).json["items"]
    spare_the_driver_key["key_id"] = key["id"]
    with serve_in_thread(app) as base_url:
        report = run(base_url, config({"tenantApiKey": {"bearer": driver.token}}), exclude="^/v1/admin/")
    print(report)
    assert len(report.operations) == 21, report
    assert not report.failures and not report.errors, report
    # The driver was never locked out: its key still works.
    assert app.test_client().get("/v1/tenant", headers=driver.auth).status_code == 200


def test_the_admin_api_keeps_its_contract(make_app, tenantry_database_url):
    """In a scratch database: the run provisions, suspends and deletes tenants, and changes plans."""
    with fresh_database(tenantry_database_url) as url:
        scratch = make_app(url)
        with scratch.app_context():
            public_migrations.upgrade(db.engine)
        try:
            with serve_in_thread(scratch) as base_url:
                report = run(base_url, config({"adminToken": {"bearer": ADMIN_TOKEN}}), exclude="^/(?!v1/admin/)")
        finally:
            with scratch.app_context():
                db.engine.dispose()
    make_app()  # flask-smorest's Api is one object: leave the document with an app on the session's database
    print(report)
    assert len(report.operations) == 20, report
    assert not report.failures and not report.errors, report
