"""The `medusa_store` fixture: one real local Medusa 2.21 store for the whole test session.

Installed once per machine (cached outside the clone, ~/.cache/schedjobs/medusa-2.21.2, or
SCHEDJOBS_MEDUSA_CACHE), started from the migrated template in a temporary directory, stopped at
the end of the session. Use it from a test module with

    from tests.medusa_store import MEDUSA_TIMEOUT_S, medusa_store  # noqa: F401

    pytestmark = pytest.mark.timeout(MEDUSA_TIMEOUT_S)  # the first use may install Medusa

or register it once in conftest.py; importing it in several places still starts one store per
process. `medusa_store.reset_products()` deletes every product and product tag (fast, through the
Admin API); `medusa_store.reset()` also deletes every sales channel but the default one; the
`clean_medusa_store` fixture does reset() before its test. Where Node or PostgreSQL cannot be had,
the fixture fails with one line saying what is missing (never a skip).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.medusa import MedusaStore, MissingPrerequisite, StoreError, start

# The first test to use the store may install Medusa (npm ci, migrations): minutes on a cold
# machine, far more than the suite's 300 s per test.
MEDUSA_TIMEOUT_S = 1800


class _Shared:
    """One store per process, however many modules (or conftest.py) import the fixture."""

    store: MedusaStore | None = None
    users = 0


def _acquire(tmp_path_factory: pytest.TempPathFactory) -> MedusaStore:
    if _Shared.store is None:
        problem = None
        try:
            _Shared.store = start(tmp_path_factory.mktemp("medusa"), durable=False)
        except (MissingPrerequisite, StoreError) as exc:
            problem = str(exc)
        if problem is not None:  # outside the except: one line, no chained traceback
            pytest.fail(f"Medusa store: {problem}", pytrace=False)
    _Shared.users += 1
    assert _Shared.store is not None
    return _Shared.store


def _release() -> None:
    _Shared.users -= 1
    if _Shared.users == 0 and _Shared.store is not None:
        store, _Shared.store = _Shared.store, None
        store.stop()


@pytest.fixture(scope="session")
def medusa_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MedusaStore]:
    """A running store: `.url`, `.api_key` (HTTP Basic `<key>:`), `.sales_channel_id`,
    `.region_id`, `.stock_location_id`, `.client()`, `.reset_products()`, `.reset()`."""
    store = _acquire(tmp_path_factory)
    try:
        yield store
    finally:
        _release()


@pytest.fixture
def clean_medusa_store(medusa_store: MedusaStore) -> MedusaStore:
    """The session's store with no products, no product tags and only the default channel."""
    medusa_store.reset()
    return medusa_store
