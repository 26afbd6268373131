"""Tenant API: members and invitations. An invitation's token appears in one response only."""

from marshmallow import Schema, fields, validate

from app.models.tenant import MEMBER_ROLES

from .common import NOT_BLANK, PageSchema, PatchSchema, ResponseSchema

_EMAIL = ("An email address; stored normalised (trimmed, Unicode NFC, lowercase). Quoted local parts, "
          "IP-literal domains and hosts without a dot are refused (422 naming the field).")


class MemberSchema(ResponseSchema):
    id = fields.Integer()
    email = fields.String(metadata={"example": "ann@example.com"})
    display_name = fields.String(allow_none=True)
    role = fields.String(metadata={"enum": list(MEMBER_ROLES)})
    status = fields.String(metadata={"enum": ["invited", "active", "disabled"]})
    subject = fields.String(allow_none=True, metadata={
        "description": "The identity provider's `sub` the member signs in with (set on accepting)."})
    invited_by = fields.String(allow_none=True, metadata={
        "example": "member:1", "description": "Who invited the member: member:<id>, api-key:<id>, cli:…, admin-api."})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    last_seen_at = fields.DateTime(allow_none=True, metadata={
        "description": "Last request signed in as this member; refreshed at most once a minute."})


class MemberCreateSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=320),
                          metadata={"description": _EMAIL})
    role = fields.String(required=True, validate=validate.OneOf(MEMBER_ROLES), metadata={
        "description": "Only an owner invites an owner (an admin may while the tenant has no active owner)."})
    display_name = fields.String(load_default=None, allow_none=True,
                                 validate=[validate.Length(min=1, max=200), NOT_BLANK])


class MemberInvitedSchema(MemberSchema):
    invitation_token = fields.String(metadata={
        "description": "tni_<secret>: the one-time invitation token, shown this once; only its hash is kept."})
    invitation_expires_at = fields.DateTime(metadata={"description": "After this, accepting is 410."})


class MemberUpdateSchema(PatchSchema):
    role = fields.String(validate=validate.OneOf(MEMBER_ROLES))
    status = fields.String(validate=validate.OneOf(["active", "disabled"]), metadata={
        "description": "disabled: the member's tokens are refused from the next request on; active: enable again."})
    display_name = fields.String(allow_none=True, validate=[validate.Length(min=1, max=200), NOT_BLANK])


class MemberPageSchema(PageSchema):
    items = fields.List(fields.Nested(MemberSchema))


class InvitationAcceptSchema(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=200),
                          metadata={"description": "The invitation token (tni_…)."})
    subject = fields.String(validate=validate.Length(min=1, max=190), metadata={
        "description": "The accepting person's `sub` at the identity provider: their JWTs then sign in as "
                       "this member. Another member's subject is 409. With a JWT, the token's `sub` "
                       "(may be left out); with an API key, this or `email` is required (422)."})
    email = fields.String(validate=validate.Length(min=3, max=320), metadata={
        "description": "The accepting person's (verified) email; must be the invited address, else 409. "
                       "With a JWT, the token's verified email (may be left out)."})
