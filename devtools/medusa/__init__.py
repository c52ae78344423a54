"""A real local Medusa v2 (2.21.2) store for the Medusa sync target: see store.py and API_NOTES.md.

`python -m devtools.medusa` (or `make medusa`) installs it once and runs it until Ctrl-C.
"""

from devtools.medusa.store import (
    MEDUSA_VERSION,
    MedusaStore,
    MissingPrerequisite,
    StoreError,
    default_cache_dir,
    find_node,
    find_postgres,
    install,
    start,
)

__all__ = [
    "MEDUSA_VERSION",
    "MedusaStore",
    "MissingPrerequisite",
    "StoreError",
    "default_cache_dir",
    "find_node",
    "find_postgres",
    "install",
    "start",
    "stop",
]


def stop(store: MedusaStore) -> None:
    """Stop the store's Medusa and PostgreSQL processes (by PID)."""
    store.stop()
