"""Isolation as a property: random interleavings of tenants' work, checked against a model.

A Hypothesis state machine drives the HTTP API (Flask test client) the way several
tenants and an operator would, in any order: provisioning tenants (admin API),
creating, reading, updating and deleting repositories, suspending and resuming
tenants, deleting them and provisioning their slug again, and issuing and revoking
keys (``/v1/api-keys``, admin keys; the last active admin key cannot go: 409). An
in-memory model says what each tenant must see. After every step:

- every list of every live tenant returns exactly the model's rows for it: no row of
  another tenant, no lost or phantom write;
- a suspended tenant's keys get 403 ``tenant-suspended``;
- revoked keys, and keys of deleted tenants, get 401.

Each rule checks its own answer against the model too (another tenant's repository or
key id is 404, never its row), and a tenant's key list is compared with the model
whenever its keys change.

Bounded for CI (``max_examples``, ``stateful_step_count``), derandomized, no example
database. Tenants the machine provisions are dropped when each example ends.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.testing import ADMIN_TOKEN, drop_tenants

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROLES = ("viewer", "member", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}
MAX_LIVE_TENANTS = 3
MAX_KEYS_PER_TENANT = 6

SETTINGS = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Key:
    id: int
    token: str
    role: str
    revoked: bool = False

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class TenantModel:
    slug: str
    keys: dict[int, Key] = field(default_factory=dict)
    suspended: bool = False
    #: id -> (github_repo_id, name, enabled)
    repos: dict[int, tuple[int, str, bool]] = field(default_factory=dict)
    github_ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def live_keys(self) -> list[Key]:
        return [k for k in self.keys.values() if not k.revoked]

    def active_admins(self) -> list[Key]:
        return [k for k in self.live_keys() if k.role == "admin"]

    def refusal(self, key: Key, needed: str) -> tuple[int, str] | None:
        """What the API answers this key before doing anything, or None if it may proceed."""
        if key.revoked:
            return 401, "unauthorized"
        if self.suspended:
            return 403, "tenant-suspended"
        if RANK[key.role] < RANK[needed]:
            return 403, "forbidden"
        return None


def expect(response, status: int, problem_type: str | None = None) -> Any:
    assert response.status_code == status, (status, response.status_code, response.get_data(as_text=True))
    if status >= 400:
        assert response.content_type == "application/problem+json"
        if problem_type:
            assert response.json["type"].endswith("/" + problem_type), response.json
    return response.json if response.data else None


class TenantIsolation(RuleBasedStateMachine):
    """The machine; ``app`` and ``engine`` are set by the test before it runs."""

    app: Any = None
    engine: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.client = self.app.test_client()
        self.run_id = uuid.uuid4().hex[:8]
        self.counter = itertools.count()
        self.tenants: dict[str, TenantModel] = {}
        self.deleted: list[TenantModel] = []
        self.provisioned: set[str] = set()

    # --- helpers --------------------------------------------------------------------

    def live(self) -> list[TenantModel]:
        return [self.tenants[s] for s in sorted(self.tenants)]

    def with_repos(self) -> list[TenantModel]:
        return [t for t in self.live() if t.repos]

    def provision(self, slug: str) -> TenantModel:
        response = self.client.post("/v1/admin/tenants", headers=ADMIN,
                                    json={"slug": slug, "name": f"Tenant {slug}", "plan": "enterprise"})
        body = expect(response, 201)
        self.provisioned.add(slug)
        model = TenantModel(slug)
        issued = body["api_key"]
        model.keys[issued["id"]] = Key(issued["id"], issued["token"], "admin")
        self.tenants[slug] = model
        return model

    def new_slug(self) -> str:
        return f"p{self.run_id}_{next(self.counter)}"

    def any_key(self, data, tenant: TenantModel) -> Key:
        return data.draw(st.sampled_from(sorted(tenant.keys.values(), key=lambda k: k.id)), label="key")

    def any_tenant(self, data, tenants: list[TenantModel] | None = None) -> TenantModel:
        return data.draw(st.sampled_from(tenants if tenants is not None else self.live()), label="tenant")

    def foreign_id(self, data, tenant: TenantModel) -> int:
        """A repository id that exists in another tenant's schema but not in this one, or in none."""
        elsewhere = sorted({i for t in self.live() if t is not tenant for i in t.repos} - set(tenant.repos))
        return data.draw(st.sampled_from(elsewhere) if elsewhere else st.integers(1, 10_000), label="foreign id")

    # --- the operator -----------------------------------------------------------------

    @initialize()
    def two_tenants(self) -> None:
        self.provision(self.new_slug())
        self.provision(self.new_slug())

    @precondition(lambda self: len(self.tenants) < MAX_LIVE_TENANTS)
    @rule()
    def provision_tenant(self) -> None:
        self.provision(self.new_slug())

    @precondition(lambda self: any(t.slug not in self.tenants for t in self.deleted)
                  and len(self.tenants) < MAX_LIVE_TENANTS)
    @rule(data=st.data())
    def provision_a_deleted_slug_again(self, data) -> None:
        old = data.draw(st.sampled_from([t for t in self.deleted if t.slug not in self.tenants]), label="old")
        self.provision(old.slug)

    @precondition(lambda self: len(self.tenants) > 1)
    @rule(data=st.data())
    def delete_tenant(self, data) -> None:
        tenant = self.any_tenant(data)
        expect(self.client.delete(f"/v1/admin/tenants/{tenant.slug}", headers=ADMIN), 204)
        del self.tenants[tenant.slug]
        self.deleted.append(tenant)
        for key in list(tenant.keys.values())[-2:]:  # its keys went with it
            expect(self.client.get("/v1/tenant", headers=key.auth), 401, "unauthorized")

    def set_status(self, tenant: TenantModel, suspended: bool) -> None:
        status = "suspended" if suspended else "active"
        body = expect(self.client.patch(f"/v1/admin/tenants/{tenant.slug}", json={"status": status},
                                        headers=ADMIN), 200)
        assert body["status"] == status and body["slug"] == tenant.slug
        tenant.suspended = suspended

    @precondition(lambda self: not any(t.suspended for t in self.tenants.values()))
    @rule(data=st.data())
    def suspend(self, data) -> None:
        self.set_status(self.any_tenant(data), True)

    @precondition(lambda self: any(t.suspended for t in self.tenants.values()))
    @rule(data=st.data(), again=st.booleans())
    def resume(self, data, again: bool) -> None:
        """Resume the suspended tenant (or, with ``again``, suspend it once more: a no-op)."""
        tenant = self.any_tenant(data, [t for t in self.live() if t.suspended])
        self.set_status(tenant, not again)

    # --- the tenants' work ------------------------------------------------------------

    @rule(data=st.data(), enabled=st.booleans(), duplicate=st.booleans())
    def create_repository(self, data, enabled: bool, duplicate: bool) -> None:
        self._create(data, enabled, duplicate and enabled)

    @rule(data=st.data())
    def create_another_repository(self, data) -> None:
        """Creating is the commonest write; a second rule makes it as likely as the others together."""
        self._create(data, True, False)

    def _create(self, data, enabled: bool, duplicate: bool) -> None:
        tenant = self.any_tenant(data)
        key = self.any_key(data, tenant)
        if duplicate and tenant.repos:
            github_id = data.draw(st.sampled_from(sorted(v[0] for v in tenant.repos.values())), label="dup")
        else:
            github_id = next(tenant.github_ids)
        name = f"{tenant.slug}-{github_id}"
        response = self.client.post("/v1/repositories", headers=key.auth, json={
            "github_repo_id": github_id, "owner": "octo", "name": name, "enabled": enabled})
        refused = tenant.refusal(key, "member")
        if refused:
            expect(response, *refused)
        elif github_id in {v[0] for v in tenant.repos.values()}:
            expect(response, 409, "conflict")
        else:
            body = expect(response, 201)
            assert (body["github_repo_id"], body["name"], body["enabled"]) == (github_id, name, enabled)
            assert body["id"] not in tenant.repos
            tenant.repos[body["id"]] = (github_id, name, enabled)

    @rule(data=st.data(), own=st.booleans())
    def read_repository(self, data, own: bool) -> None:
        tenant = self.any_tenant(data)
        key = self.any_key(data, tenant)
        repo_id = (data.draw(st.sampled_from(sorted(tenant.repos)), label="id")
                   if own and tenant.repos else self.foreign_id(data, tenant))
        response = self.client.get(f"/v1/repositories/{repo_id}", headers=key.auth)
        refused = tenant.refusal(key, "viewer")
        if refused:
            expect(response, *refused)
        elif repo_id in tenant.repos:
            body = expect(response, 200)
            assert (body["github_repo_id"], body["name"], body["enabled"]) == tenant.repos[repo_id]
        else:
            expect(response, 404, "not-found")

    @rule(data=st.data(), own=st.booleans(), enabled=st.booleans())
    def update_repository(self, data, own: bool, enabled: bool) -> None:
        tenant = self.any_tenant(data)
        key = self.any_key(data, tenant)
        repo_id = (data.draw(st.sampled_from(sorted(tenant.repos)), label="id")
                   if own and tenant.repos else self.foreign_id(data, tenant))
        name = f"{tenant.slug}-renamed-{next(self.counter)}"
        response = self.client.patch(f"/v1/repositories/{repo_id}", headers=key.auth,
                                     json={"name": name, "enabled": enabled})
        refused = tenant.refusal(key, "member")
        if refused:
            expect(response, *refused)
        elif repo_id in tenant.repos:
            body = expect(response, 200)
            github_id = tenant.repos[repo_id][0]
            assert (body["id"], body["github_repo_id"], body["name"], body["enabled"]) == (
                repo_id, github_id, name, enabled)
            tenant.repos[repo_id] = (github_id, name, enabled)
        else:
            expect(response, 404, "not-found")

    @rule(data=st.data(), own=st.booleans())
    def delete_repository(self, data, own: bool) -> None:
        tenant = self.any_tenant(data)
        key = self.any_key(data, tenant)
        repo_id = (data.draw(st.sampled_from(sorted(tenant.repos)), label="id")
                   if own and tenant.repos else self.foreign_id(data, tenant))
        response = self.client.delete(f"/v1/repositories/{repo_id}", headers=key.auth)
        refused = tenant.refusal(key, "member")
        if refused:
            expect(response, *refused)
        elif repo_id in tenant.repos:
            expect(response, 204)
            del tenant.repos[repo_id]
        else:
            expect(response, 404, "not-found")

    @rule(data=st.data(), enabled=st.booleans())
    def list_by_enabled(self, data, enabled: bool) -> None:
        tenant = self.any_tenant(data)
        key = self.any_key(data, tenant)
        response = self.client.get(f"/v1/repositories?enabled={str(enabled).lower()}&limit=200", headers=key.auth)
        refused = tenant.refusal(key, "viewer")
        if refused:
            expect(response, *refused)
            return
        body = expect(response, 200)
        assert [r["id"] for r in body["items"]] == sorted(i for i, v in tenant.repos.items() if v[2] is enabled)

    @precondition(lambda self: any(len(t.keys) < MAX_KEYS_PER_TENANT for t in self.tenants.values()))
    @rule(data=st.data(), role=st.sampled_from(ROLES))
    def issue_key(self, data, role: str) -> None:
        tenant = self.any_tenant(data, [t for t in self.live() if len(t.keys) < MAX_KEYS_PER_TENANT])
        key = self.any_key(data, tenant)
        response = self.client.post("/v1/api-keys", headers=key.auth, json={"role": role, "name": f"k-{role}"})
        refused = tenant.refusal(key, "admin")
        if refused:
            expect(response, *refused)
            return
        body = expect(response, 201)
        assert body["role"] == role and body["token"].startswith(f"tnt_{body['prefix']}_")
        assert all(body["id"] not in t.keys for t in [*self.live(), *self.deleted])
        tenant.keys[body["id"]] = Key(body["id"], body["token"], role)
        self.check_keys(tenant)

    @rule(data=st.data(), own=st.booleans())
    def revoke_key(self, data, own: bool) -> None:
        tenant = self.any_tenant(data)
        key = self.any_key(data, tenant)
        others = [k for t in [*self.live(), *self.deleted] if t is not tenant for k in t.keys.values()]
        if own or not others:
            target = self.any_key(data, tenant)
        else:
            target = data.draw(st.sampled_from(sorted(others, key=lambda k: k.id)), label="foreign key")
        response = self.client.delete(f"/v1/api-keys/{target.id}", headers=key.auth)
        refused = tenant.refusal(key, "admin")
        if refused:
            expect(response, *refused)
        elif target.id not in tenant.keys:
            expect(response, 404, "not-found")  # another tenant's key does not exist from here
        elif target.revoked:
            expect(response, 409, "api-key-revoked")
        elif target.role == "admin" and tenant.active_admins() == [target]:
            expect(response, 409, "last-admin-key")
        else:
            expect(response, 204)
            target.revoked = True
            expect(self.client.get("/v1/tenant", headers=target.auth), 401, "unauthorized")
            if not tenant.suspended:
                self.check_keys(tenant)

    def check_keys(self, tenant: TenantModel) -> None:
        """The tenant's key list is exactly its keys, revoked ones marked: none of another tenant."""
        response = self.client.get("/v1/api-keys?limit=200", headers=tenant.active_admins()[0].auth)
        listed = {k["id"]: (k["role"], k["revoked_at"] is not None) for k in expect(response, 200)["items"]}
        assert listed == {k.id: (k.role, k.revoked) for k in tenant.keys.values()}, tenant.slug

    # --- what must hold after every step ---------------------------------------------------

    @invariant()
    def every_tenant_sees_exactly_its_own_rows(self) -> None:
        for tenant in self.live():
            live = tenant.live_keys()
            assert tenant.active_admins(), "the model lost the last admin key"
            response = self.client.get("/v1/repositories?limit=200", headers=live[0].auth)
            if tenant.suspended:
                expect(response, 403, "tenant-suspended")
                continue
            rows = expect(response, 200)["items"]
            assert response.json["next_cursor"] is None
            seen = {r["id"]: (r["github_repo_id"], r["name"], r["enabled"]) for r in rows}
            assert seen == tenant.repos, (tenant.slug, seen, tenant.repos)
            assert all(r["name"].startswith(tenant.slug + "-") for r in rows)
            assert [r["id"] for r in rows] == sorted(seen)

    @invariant()
    def refused_keys_stay_refused(self) -> None:
        """The newest refused keys (revoked, or of a deleted tenant) are still 401 after later steps."""
        refused = [k for t in self.live() for k in t.keys.values() if k.revoked]
        refused += [k for t in self.deleted for k in t.keys.values()]
        for key in sorted(refused, key=lambda k: k.id)[-1:]:
            expect(self.client.get("/v1/tenant", headers=key.auth), 401, "unauthorized")

    def teardown(self) -> None:
        if self.provisioned:
            drop_tenants(self.engine, sorted(self.provisioned))


def test_random_interleavings_keep_every_tenant_to_its_own_rows(app, engine):
    TenantIsolation.app = app
    TenantIsolation.engine = engine
    try:
        run_state_machine_as_test(TenantIsolation, settings=SETTINGS)
    finally:
        TenantIsolation.app = TenantIsolation.engine = None
