"""Authentication settings fail fast with a clear message; tenant hints parse the Host strictly."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app import create_app
from app.api.hints import host_hint, host_name, names
from app.config import ConfigError, defaults, from_env, validate
from app.tenancy.jwt_tokens import JwtVerifier, looks_like_jwt

SECRET = "s" * 32


def pem(key, private: bool = False) -> str:
    if private:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def settings(**values) -> dict:
    merged = defaults()
    merged.update(values)
    validate(merged)
    return merged


# --- single values from the environment ------------------------------------------------


def test_the_authentication_settings_parse_from_the_environment(tmp_path, rsa_pem):
    key_file = tmp_path / "jwt.pem"
    key_file.write_text(rsa_pem)
    found = from_env({
        "TENANT_BASE_DOMAIN": "Tenants.Example.COM.", "JWT_SECRET": SECRET, "JWT_PUBLIC_KEY": str(key_file),
        "JWT_AUDIENCE": "tenantry-api", "JWT_ISSUER": "https://idp/", "JWT_LEEWAY": "5",
    })
    assert found == {
        "TENANT_BASE_DOMAIN": "tenants.example.com", "JWT_SECRET": SECRET, "JWT_PUBLIC_KEY": rsa_pem.strip(),
        "JWT_AUDIENCE": "tenantry-api", "JWT_ISSUER": "https://idp/", "JWT_LEEWAY": 5,
    }
    assert from_env({"JWT_PUBLIC_KEY": rsa_pem})["JWT_PUBLIC_KEY"] == rsa_pem.strip()  # the PEM text itself


def test_jwt_is_off_and_hosts_unchecked_by_default():
    values = defaults()
    assert values["TENANT_BASE_DOMAIN"] is None and values["JWT_LEEWAY"] == 30
    assert not JwtVerifier.from_config(values).enabled


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TENANT_BASE_DOMAIN", "https://example.com", "DNS name"),
        ("TENANT_BASE_DOMAIN", "example.com:443", "DNS name"),
        ("TENANT_BASE_DOMAIN", "example.com/api", "DNS name"),
        ("TENANT_BASE_DOMAIN", "*.example.com", "DNS name"),
        ("TENANT_BASE_DOMAIN", "exa_mple.com", "DNS name"),
        ("TENANT_BASE_DOMAIN", "-bad.example.com", "DNS name"),
        ("JWT_SECRET", "short", "at least 32 bytes"),
        ("JWT_SECRET", "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----", "JWT_PUBLIC_KEY"),
        ("JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----", "readable PEM"),
        ("JWT_PUBLIC_KEY", "/nonexistent/jwt.pem", "neither PEM text nor a readable PEM file"),
        ("JWT_LEEWAY", "301", "at most 300"),
        ("JWT_LEEWAY", "-1", "zero or a positive"),
        ("JWT_AUDIENCE", "   ", "must not be empty"),
    ],
)
def test_a_bad_value_names_the_variable(variable, value, message):
    with pytest.raises(ConfigError, match=variable) as raised:
        from_env({variable: value})
    assert message in str(raised.value)


def test_a_secret_is_never_echoed():
    with pytest.raises(ConfigError) as raised:
        from_env({"JWT_SECRET": "hunter2-is-short"})
    assert "hunter2" not in str(raised.value) and "<hidden>" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        settings(JWT_SECRET="hunter2-is-short", JWT_AUDIENCE="a")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("make_key", "message"),
    [
        (lambda: pem(ec.generate_private_key(ec.SECP256R1())), "must be an RSA public key"),
        (lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "1024 bits"),
        (lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=2048), private=True), "readable PEM"),
    ],
    ids=["ec", "rsa-1024", "private-key"],
)
def test_only_an_rsa_public_key_of_2048_bits_or_more_is_accepted(tmp_path, make_key, message):
    key_file = tmp_path / "key.pem"
    key_file.write_text(make_key())
    for value in (str(key_file), key_file.read_text()):
        with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY") as raised:
            from_env({"JWT_PUBLIC_KEY": value})
        assert message in str(raised.value)


def test_an_unreadable_pem_file_fails(tmp_path):
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY.*neither PEM text nor a readable PEM file"):
        from_env({"JWT_PUBLIC_KEY": str(key_file)})
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        from_env({"JWT_PUBLIC_KEY": str(tmp_path)})  # a directory


# --- combinations, and values given as a mapping --------------------------------------


@pytest.mark.parametrize("key", ["JWT_SECRET", "JWT_PUBLIC_KEY"])
def test_a_jwt_key_without_an_audience_fails(key, rsa_pem):
    with pytest.raises(ConfigError, match="JWT_AUDIENCE must be set"):
        settings(**{key: SECRET if key == "JWT_SECRET" else rsa_pem})


@pytest.mark.parametrize("variable", ["JWT_AUDIENCE", "JWT_ISSUER"])
def test_an_audience_or_issuer_without_a_key_fails(variable):
    with pytest.raises(ConfigError, match=f"{variable} is set but neither JWT_SECRET nor JWT_PUBLIC_KEY"):
        settings(**{variable: "x"})


def test_mapping_values_are_checked_and_normalised_like_the_environment(tmp_path, rsa_pem):
    key_file = tmp_path / "jwt.pem"
    key_file.write_text(rsa_pem)
    values = settings(TENANT_BASE_DOMAIN="Example.COM", JWT_PUBLIC_KEY=str(key_file), JWT_AUDIENCE="a")
    assert values["TENANT_BASE_DOMAIN"] == "example.com"
    assert values["JWT_PUBLIC_KEY"] == rsa_pem.strip()
    verifier = JwtVerifier.from_config(values)
    assert set(verifier.keys) == {"RS256"} and verifier.audience == "a" and verifier.leeway == 30
    assert set(JwtVerifier.from_config(settings(JWT_SECRET=SECRET, JWT_AUDIENCE="a")).keys) == {"HS256"}
    for bad in ({"JWT_SECRET": b"s" * 40, "JWT_AUDIENCE": "a"}, {"JWT_LEEWAY": 1000},
                {"TENANT_BASE_DOMAIN": "http://x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            settings(**bad)


def test_the_app_refuses_to_start_with_a_bad_combination():
    # Nothing connects first: the database URL points nowhere.
    base = {"SQLALCHEMY_DATABASE_URI": "postgresql://nobody@127.0.0.1:1/none", "TESTING": True}
    with pytest.raises(ConfigError, match="JWT_AUDIENCE must be set"):
        create_app({**base, "JWT_SECRET": SECRET})
    with pytest.raises(ConfigError, match="JWT_PUBLIC_KEY"):
        create_app({**base, "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
                    "JWT_AUDIENCE": "a"})


# --- shapes and hints -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "jwt_shaped"),
    [("a.b.c", True), ("a.b.", True), ("eyJ.eyJ.sig-_", True), ("a.b", False), ("a.b.c.d", False),
     (".b.c", False), ("a..c", False), ("a.b.c=", False), ("tnt_abc_def", False), ("a b.c.d", False)],
)
def test_jwts_are_told_apart_by_shape(token, jwt_shaped):
    assert looks_like_jwt(token) is jwt_shaped


@pytest.mark.parametrize(
    ("header", "name"),
    [(None, None), ("", None), ("Acme.Example.COM", "acme.example.com"), ("acme.example.com:8443", "acme.example.com"),
     ("acme.example.com.", "acme.example.com"), ("acme.example.com.:80", "acme.example.com"),
     ("acme.example.com:", "acme.example.com"), ("[::1]:5000", None), ("10.0.0.1:80", "10.0.0.1")],
)
def test_host_names_drop_port_case_and_trailing_dot(header, name):
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("header", "hint"),
    [("acme.example.com", "acme"), ("ACME.example.com:443", "acme"), ("x.acme.example.com", "x.acme"),
     ("example.com", None), ("example.com:443", None), ("evilexample.com", None), ("acme.example.com.evil.org", None),
     ("localhost", None), (None, None), ("acme_eu.example.com", "acme_eu"), (".example.com", "")],
)
def test_the_host_hint_is_the_part_before_the_base_domain(header, hint):
    assert host_hint(header, "example.com") == hint


@pytest.mark.parametrize(
    ("hint", "slug", "match"),
    [("acme", "acme", True), ("ACME", "acme", True), ("acme-eu", "acme_eu", True), ("acme_eu", "acme_eu", True),
     (" acme ", "acme", True), ("acme", "acme_eu", False), ("", "acme", False), ("x.acme", "acme", False),
     ("acme, acme", "acme", False)],
)
def test_a_hint_names_a_slug_ignoring_case_with_hyphens_for_underscores(hint, slug, match):
    assert names(hint, slug) is match


def test_a_private_key_that_lost_its_first_line_is_not_echoed():
    """Taken for a file path, the key's body must not reach the message (nor the log)."""
    body = "MIIEowIBAAKCAQEAsecretkeymaterial"
    with pytest.raises(ConfigError, match="GITHUB_PRIVATE_KEY") as raised:
        from_env({"GITHUB_PRIVATE_KEY": body + "\n-----END RSA PRIVATE KEY-----"})
    assert "neither PEM text nor a readable PEM file" in str(raised.value)
    assert "secretkeymaterial" not in str(raised.value)
