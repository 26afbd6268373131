"""Alembic env for the public schema.

Always called with a connection in ``config.attributes["connection"]`` (``flask db``
and the test fixtures pass one), so no URL handling lives here. Guards are in code:
a lock_timeout so a migration waiting behind traffic fails fast instead of queueing
every request behind it, and a transaction advisory lock so two deploys never migrate
at once. The caller commits.
"""

from alembic import context

from app.models.public import PublicBase

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(
        dialect_name="postgresql",
        target_metadata=PublicBase.metadata,
        version_table_schema="public",
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    if connection is None:
        raise RuntimeError("run public migrations through `flask db ...`")
    # The caller's transaction holds the whole run; it commits once at the end.
    connection.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('tenantry.public_migrations'))")
    context.configure(
        connection=connection,
        target_metadata=PublicBase.metadata,
        version_table_schema="public",
        # Connections come with search_path=pg_catalog (app.public_migrations), so
        # "public" is an explicit schema here, exactly as the models name it.
        include_schemas=True,
        include_name=lambda name, type_, parent: type_ != "schema" or name == "public",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
