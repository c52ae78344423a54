"""The first schema: connections, expansion pages, the catalog and batch outcomes.

A file made before migrations (its tables made by CREATE TABLE IF NOT EXISTS, no alembic_version)
has these tables already: they are kept as they are and the file is stamped with this revision.
The tables are written out here, not imported from activities/schema.py, so this revision stays
what it was when schema.py changes.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    frozen = sa.MetaData()
    text = sa.Text
    sa.Table(
        "connections",
        frozen,
        sa.Column("id", text, primary_key=True),
        sa.Column("api_code", text, nullable=False),
        sa.Column("name", text, nullable=False),
        sa.Column("api_key", text, nullable=False),
        sa.Column("scope", text),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", text, nullable=False),
        sa.Column("updated_at", text, nullable=False),
    )
    sa.Table(
        "expansion_pages",
        frozen,
        sa.Column("ref", text, primary_key=True),
        sa.Column("page", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("inputs", text, nullable=False),
        sa.Column("created_at", text, nullable=False),
    )
    sa.Table(
        "products",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", text, nullable=False, server_default="default"),
        sa.Column("external_id", text, nullable=False),
        sa.Column("handle", text, nullable=False),
        sa.Column("title", text, nullable=False),
        sa.Column("description", text, nullable=False, server_default=""),
        sa.Column("status", text, nullable=False),
        sa.Column("category", text),
        sa.Column("tags", text, nullable=False, server_default="[]"),
        sa.Column("images", text, nullable=False, server_default="[]"),
        sa.Column("thumbnail", text),
        sa.Column("width", sa.Float),
        sa.Column("height", sa.Float),
        sa.Column("depth", sa.Float),
        sa.Column("weight", sa.Float),
        sa.Column("metadata", text, nullable=False, server_default="{}"),
        sa.Column("content_hash", text, nullable=False),
        sa.Column("created_at", text, nullable=False),
        sa.Column("updated_at", text, nullable=False),
        sa.CheckConstraint("status IN ('draft', 'published')"),
        sa.UniqueConstraint("tenant", "external_id"),
        sa.UniqueConstraint("tenant", "handle"),
    )
    sa.Table(
        "product_variants",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "product_id",
            sa.Integer,
            sa.ForeignKey("products.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("title", text, nullable=False),
        sa.Column("sku", text),
        sa.Column("price_amount", sa.Integer, nullable=False),
        sa.Column("currency_code", text, nullable=False),
        sa.Column("inventory_quantity", sa.Integer, nullable=False),
        sa.Column("created_at", text, nullable=False),
        sa.Column("updated_at", text, nullable=False),
        sa.UniqueConstraint("product_id", "title"),
        # SQLite would store 12.5 in an INTEGER column: money stays whole cents.
        sa.CheckConstraint("typeof(price_amount) = 'integer'").ddl_if(dialect="sqlite"),
    )
    sa.Table(
        "batch_outcomes",
        frozen,
        sa.Column("sync_run", text, primary_key=True),
        sa.Column("batch_offset", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("outcome", text, nullable=False),
        sa.Column("recorded_at", text, nullable=False),
        sa.Index("batch_outcomes_recorded_at", "recorded_at"),
    )
    frozen.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    for table in ("batch_outcomes", "product_variants", "products", "expansion_pages"):
        op.drop_table(table)
    op.drop_table("connections")
