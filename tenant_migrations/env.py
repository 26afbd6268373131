"""Alembic env for ONE tenant schema per run.

The caller gives the connection (with its transaction open) and the schema in
``config.attributes``; ``app.tenancy.migrations`` does this for provisioning, and
``flask tenants revision`` does it for autogenerate against a scratch schema. The
schema's ``alembic_version`` lives inside the schema; ``public`` is never touched.
"""

from alembic import context

from app.models.tenant import TenantBase
from app.tenancy.migrations import configure_tenant_context
from app.tenancy.naming import quote_ident

config = context.config
schema_name = config.attributes.get("schema_name") or context.get_x_argument(
    as_dictionary=True
).get("schema")
if not schema_name:
    raise RuntimeError("tenant migrations need a schema: config.attributes['schema_name']")

if context.is_offline_mode():
    context.configure(
        dialect_name="postgresql",
        target_metadata=TenantBase.metadata,
        version_table_schema=schema_name,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.execute(f"SET LOCAL search_path TO {quote_ident(schema_name)}")
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("tenant migrations need config.attributes['connection']")
    configure_tenant_context(context, connection, schema_name)
    with context.begin_transaction():
        context.run_migrations()
