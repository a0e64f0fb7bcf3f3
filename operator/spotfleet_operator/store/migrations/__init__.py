"""The store's Alembic revisions (``versions/``) and environment (``env.py``)."""
