"""Slug rules and quoting: no database needed."""

import pytest

from app.tenancy import InvalidSlug, quote_ident, schema_name_for, validate_slug

VALID = ["ab", "acme", "acme_corp", "a1", "x" * 40, "globex_2024", "t_x"]
INVALID = [
    "",
    "a",  # too short
    "x" * 41,  # too long: t_ + 41 would still fit 63 bytes, but the contract is 40
    "Acme",
    "1acme",
    "_acme",
    "acme-corp",
    "acme corp",
    "acmé",
    "acme;drop schema public cascade",
    "acme\"; DROP TABLE public.tenants; --",
    "a'b",
    "acme\x00",
    "acme\n",
    "public",
    "information_schema",
    "pg_catalog",
    "pg_toast",
    "pg_anything",
    "postgres",
    "admin",
    None,
    42,
    ["acme"],
]


@pytest.mark.parametrize("slug", VALID)
def test_valid_slugs_name_a_schema(slug):
    assert validate_slug(slug) == slug
    assert schema_name_for(slug) == f"t_{slug}"
    assert len(schema_name_for(slug).encode()) <= 63


@pytest.mark.parametrize("slug", INVALID)
def test_invalid_slugs_are_refused_with_a_reason(slug):
    with pytest.raises(InvalidSlug) as info:
        validate_slug(slug)
    assert info.value.field_errors and info.value.field_errors["slug"][0]


def test_quote_ident_quotes_tenant_schemas_only():
    assert quote_ident("t_acme") == '"t_acme"'
    for bad in ("public", "t_", 't_a"b', "t_Acme", "pg_catalog", "t_acme; drop"):
        with pytest.raises(InvalidSlug):
            quote_ident(bad)
