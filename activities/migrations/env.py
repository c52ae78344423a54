"""Alembic's entry: run by activities/db.py on a connection it holds (in a transaction, under
the migration lock); no alembic.ini, no URL of its own."""

from alembic import context

from activities.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,  # for `alembic revision --autogenerate` against a database
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying a table
)
with context.begin_transaction():  # joins the caller's transaction
    context.run_migrations()
