"""Alembic migrations of the catalog database (run by :func:`worldmill.catalog.database.migrate`)."""
