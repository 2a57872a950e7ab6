"""Where moto is less strict than AWS in a way this project's guarantees depend on, corrected.

Unlike the throughput shortcuts announced in ``devstack.aws`` (same behaviour, faster), these
make moto behave *more* like AWS; every moto server that serves DynamoDB here applies them
(the local stack's second process and the test suite's function-level server).

- DynamoDB conditional writes are atomic per item in AWS: of two ``PutItem`` calls with
  ``attribute_not_exists(id)`` on one key, exactly one succeeds. moto reads the current item,
  evaluates the condition and stores the new one without a lock, so on a threaded server two
  racing writers can both pass. Powertools idempotency is built on that guarantee: the same
  POST sent five times at once was accepted twice (CI, 2026-11-24). Every item operation now
  runs under one lock per server process; DynamoDB's own per-item atomicity is stronger than
  we need and a process-wide lock costs nothing measurable next to moto's request parsing.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Final

from moto.dynamodb.models import DynamoDBBackend

ITEM_OPERATIONS: Final = (
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
)
"""``DynamoDBBackend`` methods that read-check-write one item (or read one consistently).
BatchWriteItem goes through ``put_item``/``delete_item`` item by item, as in AWS."""

Patch = tuple[Any, str, Any]
"""(owner, attribute, replacement): apply with ``setattr``, keep the old value to undo."""


def atomic_dynamodb_item_operations() -> list[Patch]:
    """The patches that make each DynamoDB item operation atomic (see the module docstring)."""
    # Re-entrant: transact_write_items calls put_item/update_item/delete_item itself.
    lock = threading.RLock()

    def one_at_a_time(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return locked

    return [
        (DynamoDBBackend, name, one_at_a_time(getattr(DynamoDBBackend, name)))
        for name in ITEM_OPERATIONS
    ]
