"""Tables inside each tenant schema. No schema here: search_path resolves them.

Citus-ready by construction (docs/architecture.md): every table has a primary key,
references only tables of its own schema, and uses no triggers.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Index, MetaData, String, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .public import NAMING_CONVENTION
from .types import bigint_pk, created_at, updated_at


class TenantBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Repository(TenantBase):
    """A GitHub repository a tenant has connected."""

    __tablename__ = "repositories"
    __table_args__ = (Index("ix_repositories_name", "name"),)

    id: Mapped[bigint_pk]
    github_repo_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    full_name: Mapped[str] = mapped_column(String(201))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
