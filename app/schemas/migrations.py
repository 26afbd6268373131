"""Admin API: the tenant-migration ledger (runs of ``flask tenants migrate`` and their outcomes)."""

from __future__ import annotations

from typing import Any, NamedTuple

from marshmallow import fields, validate

from app.models.public import OUTCOME_STATUSES, RUN_STATUSES

from .common import PageQuerySchema, PageSchema, ResponseSchema


class MigrationCountsSchema(ResponseSchema):
    selected = fields.Integer(metadata={"description": "Tenants the run looked at."})
    migrated = fields.Integer()
    current = fields.Integer(metadata={"description": "At the target already."})
    failed = fields.Integer()
    skipped = fields.Integer(metadata={"description": "Not attempted: --fail-fast stopped the run."})
    remaining = fields.Integer(metadata={"description": "Left for a later run by --batch."})


class MigrationRunSchema(ResponseSchema):
    id = fields.Integer()
    status = fields.String(metadata={"enum": list(RUN_STATUSES)})
    target_revision = fields.String(metadata={"description": "'base' when the run emptied the schemas."})
    options = fields.Dict(keys=fields.String(), values=fields.Raw())
    started_by = fields.String()
    hostname = fields.String()
    pid = fields.Integer(metadata={"description": "The coordinator's process id on that host."})
    counts = fields.Nested(MigrationCountsSchema)
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True, metadata={"description": "Null while running."})

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        if attr == "counts":  # the counts are columns of the run itself
            return obj
        return super().get_attribute(obj, attr, default)


class MigrationRunPageSchema(PageSchema):
    items = fields.List(fields.Nested(MigrationRunSchema))


class MigrationOutcomeSchema(ResponseSchema):
    tenant_slug = fields.String()
    status = fields.String(metadata={"enum": list(OUTCOME_STATUSES)})
    from_revision = fields.String(allow_none=True)
    to_revision = fields.String(allow_none=True)
    attempts = fields.Integer()
    duration_ms = fields.Float()
    error = fields.String(allow_none=True, metadata={"description": "Why the schema failed; null otherwise."})
    finished_at = fields.DateTime()


class MigrationOutcomePageSchema(PageSchema):
    items = fields.List(fields.Nested(MigrationOutcomeSchema))


class RunWithOutcomes(NamedTuple):
    """What :class:`MigrationRunDetailSchema` dumps: a run and one page of its outcomes."""

    run: Any
    outcomes: Any


class MigrationRunDetailSchema(MigrationRunSchema):
    outcomes = fields.Nested(
        MigrationOutcomePageSchema,
        metadata={"description": "One page of per-tenant outcomes in slug order; see cursor and status."},
    )

    def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
        if attr == "outcomes":
            return obj.outcomes
        return super().get_attribute(obj.run, attr, default)


class OutcomeQuerySchema(PageQuerySchema):
    """Pagination (``limit``, ``cursor``) applies to the run's outcomes."""

    # No load_default: absent means no filter, and the documented enum stays free of null.
    status = fields.String(
        validate=validate.OneOf(OUTCOME_STATUSES),
        metadata={"description": "Only outcomes with this status."},
    )
