"""JWT bearer tokens: a signed ``tenant`` and ``role`` instead of a stored API key.

A token is accepted when all of this holds, else :class:`InvalidToken` (401):

- its header's ``alg`` is one this deployment has a key for: ``HS256`` with
  ``JWT_SECRET``, ``RS256`` with ``JWT_PUBLIC_KEY``. Each key is verified with an
  explicit one-algorithm list, so the RSA public key is never used as an HMAC secret
  (the HS/RS confusion attack) and ``alg: none`` matches no key at all;
- the signature verifies with that key;
- ``exp`` is present and in the future, ``nbf`` and ``iat`` (when present) are not in
  the future, each within ``JWT_LEEWAY`` seconds of clock skew;
- ``aud`` contains ``JWT_AUDIENCE``; ``iss`` equals ``JWT_ISSUER`` when that is set;
- ``sub`` is a non-empty string (it names the caller in the audit actor, ``jwt:<sub>``);
- ``tenant`` is the slug of an existing tenant and ``role`` one of the key roles.

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
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models.public import API_KEY_ROLES, Tenant

from .errors import InvalidApiKey, TenantSuspended
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


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated base64url segments (the last may be empty, as in ``alg: none``)."""
    return _JWT_SHAPE.fullmatch(token) is not None


@dataclass(frozen=True)
class JwtClaims:
    tenant: str
    role: str
    subject: str


@dataclass(frozen=True)
class JwtVerifier:
    """The configured keys, each with the one algorithm it may verify."""

    keys: Mapping[str, Any] = field(default_factory=dict)  # algorithm -> key
    audience: str | None = None
    issuer: str | None = None
    leeway: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> JwtVerifier:
        """From the app's (validated) settings; no key configured: a verifier that refuses all."""
        from app.config import load_rsa_public_key

        keys: dict[str, Any] = {}
        if config.get("JWT_SECRET"):
            keys["HS256"] = config["JWT_SECRET"].encode()
        if config.get("JWT_PUBLIC_KEY"):
            keys["RS256"] = load_rsa_public_key(config["JWT_PUBLIC_KEY"])
        return cls(
            keys=keys, audience=config.get("JWT_AUDIENCE"), issuer=config.get("JWT_ISSUER"),
            leeway=int(config.get("JWT_LEEWAY") or 0),
        )

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

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
        return _claims(claims)


def _claims(claims: Mapping[str, Any]) -> JwtClaims:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        raise InvalidToken(f"Token 'sub' must be a string of 1 to {MAX_SUBJECT_LENGTH} characters.")
    tenant = claims.get("tenant")
    if tenant is None:
        raise InvalidToken("Token has no 'tenant' claim.")
    if not isinstance(tenant, str) or not SLUG_PATTERN.fullmatch(tenant):
        raise InvalidToken("Token 'tenant' claim is not a tenant slug.")
    role = claims.get("role")
    if role is None:
        raise InvalidToken("Token has no 'role' claim.")
    if role not in API_KEY_ROLES:
        raise InvalidToken(f"Token role must be one of {', '.join(API_KEY_ROLES)}.")
    return JwtClaims(tenant=tenant, role=role, subject=subject)


def authenticate(session: Session, token: str, verifier: JwtVerifier) -> tuple[JwtClaims, Tenant]:
    """Verify ``token`` and read its tenant (in the session's transaction), or raise.

    :raise InvalidToken: the token is refused, or its tenant does not exist.
    :raise TenantSuspended: the token is valid but its tenant is suspended.
    """
    claims = verifier.verify(token)
    tenant = session.scalar(select(Tenant).where(Tenant.slug == claims.tenant))
    if tenant is None:
        raise InvalidToken("Token names an unknown tenant.")
    if tenant.status != "active":
        raise TenantSuspended(tenant.slug)
    return claims, tenant
