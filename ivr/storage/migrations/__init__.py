"""The Alembic environment that creates and evolves the schema (`python -m ivr db upgrade`)."""
