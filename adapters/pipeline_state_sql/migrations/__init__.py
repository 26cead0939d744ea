"""Alembic environment and revision scripts of the SQL adapter (run by
:func:`pipeline_state_sql.create_or_upgrade`)."""
