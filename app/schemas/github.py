"""GitHub: what the webhook endpoint answers about a delivery, and a repository sync's report."""

from marshmallow import fields

from .common import ResponseSchema


class DeliveryResultSchema(ResponseSchema):
    delivery_id = fields.String(metadata={"description": "The X-GitHub-Delivery id."})
    outcome = fields.String(metadata={
        "enum": ["applied", "ignored", "duplicate", "failed"],
        "description": "applied: the change was made; duplicate: it was in place already; ignored: an event "
                       "or action not handled, or an installation not linked to a tenant (payload kept)."})
    redelivery = fields.Boolean(metadata={
        "description": "true: this delivery id was received before; nothing was done, outcome is the recorded one."})
    tenant = fields.String(allow_none=True, metadata={"description": "The slug of the tenant concerned."})
    detail = fields.String(allow_none=True)


class GithubInstallationSchema(ResponseSchema):
    installation_id = fields.Integer()
    account_id = fields.Integer()
    account_login = fields.String()
    account_type = fields.String(metadata={"enum": ["Organization", "User"]})
    installed_at = fields.DateTime()
    suspended_at = fields.DateTime(allow_none=True, metadata={"description": "Set while GitHub has it suspended."})
    uninstalled_at = fields.DateTime(allow_none=True, metadata={
        "description": "When the App was uninstalled; the tenant is suspended and kept until `flask tenants purge`."})


class SyncReportSchema(ResponseSchema):
    slug = fields.String()
    discovered = fields.Integer(metadata={"description": "Repositories GitHub lists for the installation."})
    registered = fields.Integer(metadata={"description": "Rows added, or enabled again."})
    updated = fields.Integer(metadata={"description": "Rows whose owner or name changed."})
    deactivated = fields.Integer(metadata={
        "description": "Rows disabled (never deleted): GitHub no longer lists them."})
    errors = fields.List(fields.String(), metadata={
        "description": "Why the sync stopped (GitHub refused, a rate limit asked for too long a wait); nothing "
                       "was changed then. Empty on success."})
    duration_ms = fields.Float()
