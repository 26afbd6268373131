"""Usage metering: ``usage_counters`` per tenant, metric and UTC month; plans gain a monthly request limit

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

- ``usage_counters(tenant_id, metric, period, value)``: one row per tenant, metric and
  calendar month (``period`` is the month's first day, a ``date``: it sorts, compares and
  ranges like one, and ``to_char(period, 'YYYY-MM')`` gives the API's text). Written only
  by the batched upserts of :mod:`app.tenancy.usage` (a counter adds, a gauge keeps the
  peak), never once per request. No foreign key to ``tenants``: like the platform audit
  trail, the counts outlive the tenant they bill (a deleted tenant's last month is still
  owed). The primary key serves every read: a tenant's history (``tenant_id`` first) and
  one period's top tenants (``ix_usage_counters_metric_period_value``).
- ``plans.max_api_requests_per_month``: null = unlimited; free 10,000, pro 100,000,
  enterprise unlimited.

On Citus (docs/scale-out.md, "Public tables"): nothing in a tenant schema references
``usage_counters`` and only the coordinator reads and writes it, so it stays an ordinary
coordinator table, as ``audit_events`` and ``github_deliveries`` do (no foreign key chains
it to ``plans``, so Citus does not make it a Citus local table). It has no identity
column, so nothing needs 0005's sequence care. ``plans`` is a reference table there: the
ADD COLUMN and UPDATE go through the coordinator to every copy. Not run on Citus when
written (no cluster was available); the plain-PostgreSQL tests cover it.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_LIMITS = (
    "(max_repositories IS NULL OR max_repositories >= 0)"
    " AND (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0)"
    " AND monthly_price_cents >= 0"
)


def upgrade() -> None:
    op.add_column("plans", sa.Column("max_api_requests_per_month", sa.BigInteger(), nullable=True), schema="public")
    # 0003 created it before the naming convention applied to it (ck_plans_ck_plans_limits_positive);
    # it comes back under the convention's name, as the model declares it.
    op.execute("ALTER TABLE public.plans DROP CONSTRAINT IF EXISTS ck_plans_ck_plans_limits_positive,"
               " DROP CONSTRAINT IF EXISTS ck_plans_limits_positive")
    op.create_check_constraint(
        op.f("ck_plans_limits_positive"), "plans",
        _LIMITS + " AND (max_api_requests_per_month IS NULL OR max_api_requests_per_month >= 0)",
        schema="public",
    )
    op.execute(
        "UPDATE public.plans SET max_api_requests_per_month = CASE name"
        " WHEN 'free' THEN 10000 WHEN 'pro' THEN 100000 ELSE NULL END"
    )
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", sa.BigInteger(), nullable=False),  # no foreign key: see above
        sa.Column("metric", sa.String(40), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("value", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("extract(day FROM period) = 1", name="period_is_month_start"),
        sa.CheckConstraint("value >= 0", name="value_non_negative"),
        sa.PrimaryKeyConstraint("tenant_id", "metric", "period", name="pk_usage_counters"),
        schema="public",
    )
    op.create_index("ix_usage_counters_metric_period_value", "usage_counters", ["metric", "period", "value"],
                    schema="public")


def downgrade() -> None:
    op.drop_table("usage_counters", schema="public")
    op.drop_constraint(op.f("ck_plans_limits_positive"), "plans", schema="public")
    op.create_check_constraint(op.f("ck_plans_ck_plans_limits_positive"), "plans", _LIMITS, schema="public")
    op.drop_column("plans", "max_api_requests_per_month", schema="public")
