"""The audit store: every decision and its savings, in PostgreSQL (asyncpg) or SQLite (default)."""

from spotfleet_operator.store.db import Store, default_url, normalise_url
from spotfleet_operator.store.tables import DecisionRecord

__all__ = ["DecisionRecord", "Store", "default_url", "normalise_url"]
