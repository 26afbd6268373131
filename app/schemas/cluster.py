"""The Citus cluster as the admin API shows it."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.tenancy.placement import MODES

from .common import NODE_PATTERN, FullMatch, ResponseSchema


class NodeSchema(ResponseSchema):
    node_id = fields.Integer()
    address = fields.String(metadata={"example": "10.0.0.5:5432"})
    host = fields.String()
    port = fields.Integer()
    role = fields.String(metadata={"description": "coordinator or worker"})
    active = fields.Boolean()
    takes_new_schemas = fields.Boolean(metadata={"description": "Citus places new tenant schemas here."})
    tenants = fields.Integer()
    bytes = fields.Integer()


class ClusterSchema(ResponseSchema):
    citus_version = fields.String()
    schema_sharding = fields.Boolean()
    tenants = fields.Integer()
    nodes = fields.List(fields.Nested(NodeSchema))
    not_distributed = fields.List(fields.String(), metadata={"description": "Tenants whose schema is on the "
                                                              "coordinator (flask cluster adopt)."})


class MoveSchema(Schema):
    node = fields.String(required=True, validate=FullMatch(NODE_PATTERN),
                         metadata={"example": "10.0.0.6:5432", "description": "The worker, HOST:PORT."})
    mode = fields.String(load_default="auto", validate=validate.OneOf(MODES))


class MoveResultSchema(ResponseSchema):
    slug = fields.String()
    source = fields.String()
    target = fields.String()
    status = fields.String()
    seconds = fields.Float()
