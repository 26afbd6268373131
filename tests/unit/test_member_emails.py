"""Member email addresses: how they are normalised and which are refused (no database)."""

from __future__ import annotations

import unicodedata

import pytest

from app.tenancy.errors import InvalidEmail
from app.tenancy.members import normalise_email


@pytest.mark.parametrize(("given", "stored"), [
    ("  Ann@Example.COM\t", "ann@example.com"),
    ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
    (unicodedata.normalize("NFD", "Émile@Exämple.de"), "émile@exämple.de"),  # decomposed -> NFC
    ("Émile@exämple.de", "émile@exämple.de"),  # the composed form is the same member
    ("STRASSE@example.com", "strasse@example.com"),
    ("Straße@example.com", "straße@example.com"),  # lower(), not casefold(): ß stays, not "ss"
    ("用户@例子.广告", "用户@例子.广告"),  # internationalised addresses as written (RFC 6531)
])
def test_addresses_are_stored_trimmed_nfc_and_lowercase(given, stored):
    assert normalise_email(given) == stored
    assert normalise_email(stored) == stored  # idempotent


@pytest.mark.parametrize("given", [
    "", "plain", "@example.com", "ann@", "ann@localhost", "ann@@example.com", "ann@exa_mple.com",
    "a b@example.com", "ann@example..com", ".ann@example.com", "ann.@example.com", "a..b@example.com",
    '"quoted"@example.com', "ann@[127.0.0.1]", "ann\x00@example.com", "ann@-example.com",
    "x" * 65 + "@example.com", "a@" + "b" * 250 + ".com", None, 42,
])
def test_what_is_not_an_address_is_refused_naming_the_field(given):
    with pytest.raises(InvalidEmail) as refused:
        normalise_email(given, "owner_email")
    assert list(refused.value.field_errors or {}) == ["owner_email"]
