"""GitHub onboarding without a database: slugs from logins, and the settings."""

from __future__ import annotations

import pytest

from app.config import ConfigError, from_env, validate
from app.services.github import Delivery, slug_candidate
from app.tenancy.naming import MAX_SLUG_LENGTH, SLUG_PATTERN


@pytest.mark.parametrize(("login", "n", "slug"), [
    ("octocat", 1, "octocat"),
    ("Octo-Org", 1, "octo_org"),
    ("Octo-Org", 2, "octo_org_2"),
    ("42-labs", 1, "gh_42_labs"),
    ("-x-", 1, "gh__x_"),
    ("a" * 39, 12, "a" * (MAX_SLUG_LENGTH - 3) + "_12"),
])
def test_a_login_becomes_a_slug_by_the_slug_rules(login, n, slug):
    assert slug_candidate(login, n) == slug
    assert SLUG_PATTERN.fullmatch(slug)


def test_the_previous_secret_needs_the_current_one():
    settings = from_env({"GITHUB_WEBHOOK_SECRET_PREVIOUS": "old-secret"})
    with pytest.raises(ConfigError, match="GITHUB_WEBHOOK_SECRET_PREVIOUS"):
        validate(settings)
    validate({**settings, **from_env({"GITHUB_WEBHOOK_SECRET": "new-secret"})})


def test_a_delivery_reads_action_and_installation_defensively():
    delivery = Delivery("d", "installation", "{}", {"action": "created", "installation": {"id": 7}})
    assert (delivery.action, delivery.installation_id) == ("created", 7)
    odd = Delivery("d", "ping", "{}", {"action": 3, "installation": {"id": True}})
    assert (odd.action, odd.installation_id) == (None, None)
