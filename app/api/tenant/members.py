"""/v1/members and /v1/invitations/accept: the bound tenant's people and how they join.

Listing needs ``member``; inviting, changing and removing need ``admin`` (the finer rules,
owners and the last active owner, are the service's: :mod:`app.services.members`).
Accepting an invitation takes any tenant credential: the invitation token is the authority.
The identity it links is the caller's own JWT (the invited person, signed in at the
identity provider, not a member yet) or, with an API key, the one the tenant's
application names in the body.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import abort

from app.api.blueprints import TenantBlueprint
from app.extensions import db
from app.schemas.common import PageQuerySchema
from app.schemas.members import (
    InvitationAcceptSchema,
    MemberCreateSchema,
    MemberInvitedSchema,
    MemberPageSchema,
    MemberSchema,
    MemberUpdateSchema,
)
from app.services import members as service

blp = TenantBlueprint(
    "members", __name__, url_prefix="/v1/members",
    description="The tenant's members (people): invite, change role or status, remove.",
    read="member", write="admin",
)
invitations_blp = TenantBlueprint(
    "invitations", __name__, url_prefix="/v1/invitations",
    description="Accepting an invitation to become a member.",
    read="viewer", write="viewer", invitees=True,
)


@blp.route("")
class Members(MethodView):
    @blp.doc(operationId="listMembers")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, MemberPageSchema)
    def get(self, query: dict[str, Any]):
        """List members in id order (keyset pagination)."""
        return service.list_members(db.session(), **query)

    @blp.doc(operationId="inviteMember")
    @blp.arguments(MemberCreateSchema)
    @blp.response(201, MemberInvitedSchema)
    @blp.alt_response(409, description="A member with this email exists already.")
    def post(self, body: dict[str, Any]):
        """Invite a member: created ``invited``, with a one-time token valid INVITATION_TTL_HOURS.

        The token is in this response only. Only an owner invites an owner.
        """
        return _invited(service.invite_member(db.session(), ttl=_ttl(), **body))


@blp.route("/<int:member_id>")
class MemberById(MethodView):
    @blp.doc(operationId="getMember")
    @blp.response(200, MemberSchema)
    def get(self, member_id: int):
        """One member; another tenant's id is 404."""
        return service.get_member(db.session(), member_id)

    @blp.doc(operationId="updateMember")
    @blp.arguments(MemberUpdateSchema)
    @blp.response(200, MemberSchema)
    @blp.alt_response(409, description="last-owner: it would leave no active owner; or enabling a member "
                                        "who never accepted.")
    def patch(self, body: dict[str, Any], member_id: int):
        """Change role, status (disable/enable) and/or display name; only an owner touches the owner role."""
        return service.update_member(db.session(), member_id, body)

    @blp.doc(operationId="removeMember")
    @blp.response(204)
    @blp.alt_response(409, description="last-owner: the tenant's last active owner.")
    def delete(self, member_id: int):
        """Remove a member and their invitations; their tokens are refused from the next request on."""
        service.remove_member(db.session(), member_id)


@blp.route("/<int:member_id>/invitation")
class MemberInvitation(MethodView):
    @blp.doc(operationId="reinviteMember")
    @blp.response(201, MemberInvitedSchema)
    @blp.alt_response(409, description="The member is not invited (accepted already, or disabled).")
    def post(self, member_id: int):
        """A new invitation token for a member who has not accepted yet (e.g. theirs expired).

        Earlier unaccepted tokens of the member stop working (404). Only an owner re-invites an owner.
        """
        return _invited(service.reinvite_member(db.session(), member_id, ttl=_ttl()))


def _ttl() -> timedelta:
    return timedelta(hours=current_app.config["INVITATION_TTL_HOURS"])


def _invited(invited: service.InvitedMember) -> dict[str, Any]:
    return {**{name: getattr(invited.member, name) for name in MemberSchema().fields},
            "invitation_token": invited.invitation_token, "invitation_expires_at": invited.invitation_expires_at}


@invitations_blp.route("/accept")
class AcceptInvitation(MethodView):
    @invitations_blp.doc(operationId="acceptInvitation")
    @invitations_blp.arguments(InvitationAcceptSchema)
    @invitations_blp.response(200, MemberSchema)
    @invitations_blp.alt_response(404, description="No invitation has this token (or its member was removed).")
    @invitations_blp.alt_response(409, description="invitation-used: accepted before; or the email is not the "
                                                   "invited one, or the subject is another member's.")
    @invitations_blp.alt_response(410, description="invitation-expired: the token's time is up; invite again.")
    def post(self, body: dict[str, Any]):
        """Accept an invitation: the member becomes active, linked to ``subject`` (their IdP ``sub``).

        With a JWT, the identity is the token's: its ``sub``, and its ``email`` when
        verified (which must then be the invited address). A JWT of a person not yet a
        member is accepted here, and only here. ``subject`` and ``email`` in the body may
        be left out; sent, they must be the token's. With an API key, the body names the
        identity: ``subject`` and/or ``email``.
        """
        claims = g.jwt_claims
        if claims is None:
            if "subject" not in body and "email" not in body:
                abort(422, messages={"json": {"_schema": ["Send the accepting identity: subject and/or email."]}})
            return service.accept_invitation(db.session(), **body)
        own = {"subject": claims.subject, "email": claims.verified_email}
        differing = {field: [f"With a JWT the identity is the token's; this is not its {name}."]
                     for field, name in (("subject", "sub"), ("email", "verified email"))
                     if field in body and not service.same_identity(field, body[field], own[field])}
        if differing:
            abort(422, messages={"json": differing})
        return service.accept_invitation(db.session(), token=body["token"], **own)
