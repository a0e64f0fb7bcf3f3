"""The store: decisions, actions, interruptions, price observations, the savings ledger
and model versions, in PostgreSQL (asyncpg) or SQLite (aiosqlite, the default); its
schema is migrated by Alembic (``store/migrations``) at start-up."""

from spotfleet_operator.store.db import Store, default_url, make_engine, normalise_url
from spotfleet_operator.store.tables import (
    ActionRecord,
    DecisionRecord,
    InterruptionRecord,
    ModelVersion,
    PriceObservation,
    SavingsLedgerRow,
)

__all__ = [
    "ActionRecord",
    "DecisionRecord",
    "InterruptionRecord",
    "ModelVersion",
    "PriceObservation",
    "SavingsLedgerRow",
    "Store",
    "default_url",
    "make_engine",
    "normalise_url",
]
