"""JWT bearer tokens: a signed ``tenant`` and ``role`` instead of a stored API key.

A token is accepted when all of this holds, else :class:`InvalidToken` (401):

- its header's ``alg`` is one this deployment has a key for: ``HS256`` with
  ``JWT_SECRET``, ``RS256`` with ``JWT_PUBLIC_KEY`` or with the key its ``kid`` names in
  the identity provider's JWKS (``JWT_JWKS_URL``, see :class:`JwksKeys`). Each key is verified with an
  explicit one-algorithm list, so the RSA public key is never used as an HMAC secret
  (the HS/RS confusion attack) and ``alg: none`` matches no key at all;
- the signature verifies with that key;
- ``exp`` is present and in the future, ``nbf`` and ``iat`` (when present) are not in
  the future, each within ``JWT_LEEWAY`` seconds of clock skew;
- ``aud`` contains ``JWT_AUDIENCE``; ``iss`` equals ``JWT_ISSUER`` when that is set;
- ``sub`` is a non-empty string (it names the caller in the audit actor, ``jwt:<sub>``);
- ``tenant`` is the slug of an existing tenant and ``role`` one of the key roles;
  with ``JWT_ROLE_SOURCE=member`` the ``role`` claim is neither needed nor used: the
  token's ``sub`` (or its ``email`` when ``email_verified`` is true) must name an active
  member of the tenant, whose role applies (:mod:`app.tenancy.members`).

Then the tenant is read from the database, as for a key, on every request: a
suspended tenant gets 403 (:class:`TenantSuspended`) and a deleted one 401, from the
next request on. A single token cannot be revoked before its ``exp``; issue short-lived
ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.public import API_KEY_ROLES, Tenant

from .errors import InvalidApiKey, TenancyError, TenantPending, TenantSuspended
from .naming import SLUG_PATTERN

#: Longest token accepted; real ones are a few hundred bytes.
MAX_TOKEN_LENGTH = 8192
#: The audit actor's label is ``jwt:<sub>`` in a 200-character column.
MAX_SUBJECT_LENGTH = 190

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class InvalidToken(InvalidApiKey):
    """The JWT is malformed, unsigned, badly signed, expired, for another audience or issuer,
    or its claims name no tenant or role. A subclass of :class:`InvalidApiKey` so that it is
    the same 401 wherever a bad credential is mapped.
    """


class KeysUnavailable(TenancyError):
    """The identity provider's JWKS could not be fetched (or held no usable key): the token cannot be
    checked now, which says nothing about the token (503, not 401)."""


#: RSA moduli below this are refused, from a JWKS as from JWT_PUBLIC_KEY.
RSA_MIN_BITS = 2048


class JwksKeys:
    """RS256 keys from the identity provider's JWKS endpoint, by ``kid`` (PyJWT's ``PyJWKClient``).

    - **Caching.** The key set is fetched once and reused for ``cache_seconds``; then fetched
      again on the next token. One client per app, shared by its threads (it locks itself).
    - **Rotation.** A token whose ``kid`` is not in the cached set makes the client fetch the
      set again, at once, so a key the provider has just added works without a restart; a key
      it has removed stops working when the cache is next refreshed.
    - **No hammering.** That forced fetch happens at most once per ``min_refresh_seconds``:
      tokens with made-up ``kid`` values cost one fetch per interval, not one each.
    - **Only RSA keys for RS256**, 2048 bits or more, whatever ``alg`` the JWK names otherwise.
    - An endpoint that does not answer (after the cache expired) is :class:`KeysUnavailable`.
    """

    def __init__(self, url: str, *, cache_seconds: float = 300, min_refresh_seconds: float = 30,
                 timeout: float = 5) -> None:
        self.url = url
        self.client = PyJWKClient(url, cache_jwk_set=True, lifespan=cache_seconds,
                                  cooldown_duration=min_refresh_seconds, timeout=timeout)

    def key_for(self, header: Mapping[str, Any]) -> Any:
        """The public key the token's ``kid`` names; :class:`InvalidToken` or :class:`KeysUnavailable`."""
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("Token has no 'kid' header: keys come from the identity provider's JWKS.")
        try:
            jwk: PyJWK = self.client.get_signing_key(kid)
        except PyJWKClientConnectionError as exc:
            raise KeysUnavailable(f"The identity provider's keys cannot be fetched now: {exc}") from None
        except PyJWKSetError as exc:
            raise KeysUnavailable(f"The identity provider's key set is not usable: {exc}") from None
        except PyJWKClientError:
            raise InvalidToken(f"Token key id {kid[:40]!r} is not one of the identity provider's keys.") from None
        key = jwk.key
        if jwk.key_type != "RSA" or getattr(key, "key_size", 0) < RSA_MIN_BITS:
            raise InvalidToken(f"Token key {kid[:40]!r} is not an RSA key of {RSA_MIN_BITS} bits or more.")
        return key


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated base64url segments (the last may be empty, as in ``alg: none``)."""
    return _JWT_SHAPE.fullmatch(token) is not None


@dataclass(frozen=True)
class JwtClaims:
    tenant: str
    #: The ``role`` claim; None when roles come from members (``JWT_ROLE_SOURCE=member``).
    role: str | None
    subject: str
    #: The ``email`` claim when ``email_verified`` is true (and a string), else None.
    verified_email: str | None = None


#: Where a JWT's role comes from: its claim, or the member its identity names.
ROLE_SOURCES = ("claim", "member")


@dataclass(frozen=True)
class JwtVerifier:
    """The configured keys, each with the one algorithm it may verify."""

    keys: Mapping[str, Any] = field(default_factory=dict)  # algorithm -> key
    audience: str | None = None
    issuer: str | None = None
    leeway: int = 0
    role_source: str = "claim"
    #: RS256 keys from a JWKS endpoint (instead of one ``JWT_PUBLIC_KEY``).
    jwks: JwksKeys | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> JwtVerifier:
        """From the app's (validated) settings; no key configured: a verifier that refuses all."""
        from app.config import load_rsa_public_key

        keys: dict[str, Any] = {}
        if config.get("JWT_SECRET"):
            keys["HS256"] = config["JWT_SECRET"].encode()
        if config.get("JWT_PUBLIC_KEY"):
            keys["RS256"] = load_rsa_public_key(config["JWT_PUBLIC_KEY"])
        jwks = None
        if config.get("JWT_JWKS_URL"):
            jwks = JwksKeys(config["JWT_JWKS_URL"], cache_seconds=config.get("JWT_JWKS_CACHE_SECONDS") or 300,
                            min_refresh_seconds=config.get("JWT_JWKS_MIN_REFRESH_SECONDS", 30))
        return cls(
            jwks=jwks,
            keys=keys, audience=config.get("JWT_AUDIENCE"), issuer=config.get("JWT_ISSUER"),
            leeway=int(config.get("JWT_LEEWAY") or 0), role_source=config.get("JWT_ROLE_SOURCE") or "claim",
        )

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.jwks is not None

    @property
    def members(self) -> bool:
        """Whether a token signs in as a member (its role the member's, not a claim's)."""
        return self.role_source == "member"

    def verify(self, token: str) -> JwtClaims:
        """The token's tenant, role and subject, once everything in the module doc is checked."""
        if not self.enabled:
            raise InvalidToken("JWT authentication is not enabled.")
        if self.audience is None:  # config validation refuses this; never accept any audience
            raise InvalidToken("JWT authentication is not enabled.")
        if len(token) > MAX_TOKEN_LENGTH or not looks_like_jwt(token):
            raise InvalidToken("Malformed token.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("Malformed token.") from None
        algorithm = header.get("alg")
        # The header only chooses among the configured (key, algorithm) pairs; the list
        # passed to decode() is that pair's one algorithm, never taken from the token.
        key = self.keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None and algorithm == "RS256" and self.jwks is not None:
            key = self.jwks.key_for(header)
        if key is None or not isinstance(algorithm, str):
            raise InvalidToken(f"Token algorithm {str(algorithm)[:20]!r} is not accepted.")
        required = ["exp", "aud", "sub"] + (["iss"] if self.issuer else [])
        try:
            claims = jwt.decode(
                token, key, algorithms=[algorithm], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("Token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("Token is not valid yet.") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("Token audience is not accepted.") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("Token issuer is not accepted.") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("Token signature is invalid.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"Token has no {exc.claim!r} claim.") from None
        except jwt.PyJWTError:
            raise InvalidToken("Invalid token.") from None
        return _claims(claims, role_claim=not self.members)


def _claims(claims: Mapping[str, Any], *, role_claim: bool = True) -> JwtClaims:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise InvalidToken(f"Token 'sub' must be a string of 1 to {MAX_SUBJECT_LENGTH} characters.")
    tenant = claims.get("tenant")
    if tenant is None:
        raise InvalidToken("Token has no 'tenant' claim.")
    if not isinstance(tenant, str) or not SLUG_PATTERN.fullmatch(tenant):
        raise InvalidToken("Token 'tenant' claim is not a tenant slug.")
    email = claims.get("email")
    verified_email = email if isinstance(email, str) and claims.get("email_verified") is True else None
    if not role_claim:
        return JwtClaims(tenant=tenant, role=None, subject=subject, verified_email=verified_email)
    role = claims.get("role")
    if role is None:
        raise InvalidToken("Token has no 'role' claim.")
    if role not in API_KEY_ROLES:
        raise InvalidToken(f"Token role must be one of {', '.join(API_KEY_ROLES)}.")
    return JwtClaims(tenant=tenant, role=role, subject=subject, verified_email=verified_email)


def authenticate(session: Session, token: str, verifier: JwtVerifier) -> tuple[JwtClaims, Tenant]:
    """Verify ``token`` and read its tenant (in the session's transaction), or raise.

    :raise InvalidToken: the token is refused, or its tenant does not exist.
    :raise TenantSuspended: the token is valid but its tenant is suspended.
    :raise TenantPending: the token is valid but its tenant is not activated yet.
    """
    claims = verifier.verify(token)
    tenant = session.scalar(select(Tenant).where(Tenant.slug == claims.tenant))
    if tenant is None:
        raise InvalidToken("Token names an unknown tenant.")
    if tenant.status == "pending":
        raise TenantPending(tenant.slug)
    if tenant.status != "active":
        raise TenantSuspended(tenant.slug)
    return claims, tenant
