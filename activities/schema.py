"""The application database's tables, as the stores query them (SQLAlchemy Core).

The same tables on SQLite and PostgreSQL. Times are ISO-8601 UTC text, as the SQLite file has
always held them: they sort as they compare, on both, and an old file needs no conversion.
Changing a table here needs a migration beside it (activities/migrations/versions), which is
what creates and changes the tables; this module only describes them.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# The connection registry: a row per user connection, its key sealed (activities/connections.py).
connections = Table(
    "connections",
    metadata,
    Column("id", Text, primary_key=True),
    Column("api_code", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("api_key", Text, nullable=False),
    Column("scope", Text),
    Column("active", Boolean, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)

# A large expansion's inputs, in pages, for the fan-out's page workflows (activities/expansion.py).
expansion_pages = Table(
    "expansion_pages",
    metadata,
    Column("ref", Text, nullable=False),
    Column("page", Integer, nullable=False),
    Column("inputs", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    PrimaryKeyConstraint("ref", "page"),
)

# The built-in catalog (activities/catalog.py): Medusa-shaped products, one variant each.
products = Table(
    "products",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", Text, nullable=False, server_default="default"),
    Column("external_id", Text, nullable=False),
    Column("handle", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False),
    Column("category", Text),
    Column("tags", Text, nullable=False, server_default="[]"),
    Column("images", Text, nullable=False, server_default="[]"),
    Column("thumbnail", Text),
    Column("width", Float),
    Column("height", Float),
    Column("depth", Float),
    Column("weight", Float),
    Column("metadata", Text, nullable=False, server_default="{}"),
    Column("content_hash", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    CheckConstraint("status IN ('draft', 'published')"),
    UniqueConstraint("tenant", "external_id"),
    UniqueConstraint("tenant", "handle"),
)

product_variants = Table(
    "product_variants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("product_id", Integer, ForeignKey("products.id", ondelete="CASCADE"), nullable=False),
    Column("title", Text, nullable=False),
    Column("sku", Text),
    Column("price_amount", Integer, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("inventory_quantity", Integer, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    UniqueConstraint("product_id", "title"),
)

# What each committed batch of a sync did, for a retry of that batch (activities/catalog.py).
batch_outcomes = Table(
    "batch_outcomes",
    metadata,
    Column("sync_run", Text, nullable=False),  # `<workflow id>/<run id>` of the sync
    Column("batch_offset", Integer, nullable=False),
    Column("outcome", Text, nullable=False),  # what the batch did, as the job reports it (JSON)
    Column("recorded_at", Text, nullable=False),
    PrimaryKeyConstraint("sync_run", "batch_offset"),
    Index("batch_outcomes_recorded_at", "recorded_at"),
)
