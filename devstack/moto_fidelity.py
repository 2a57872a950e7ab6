"""Where moto is less strict than AWS in a way this project's guarantees depend on, corrected.

Unlike the throughput shortcuts announced in ``devstack.aws`` (same behaviour, faster), these
make moto behave *more* like AWS. ``fidelity_patches()`` is applied in every process that runs
a moto server here: the local stack's two processes and the function tests' server.

- DynamoDB conditional writes are atomic per item in AWS: of two ``PutItem`` calls with
  ``attribute_not_exists(id)`` on one key, exactly one succeeds. moto reads the current item,
  evaluates the condition and stores the new one without a lock, so on a threaded server two
  racing writers can both pass. Powertools idempotency is built on that guarantee: the same
  POST sent five times at once was accepted twice (CI, 2026-11-24). Every item operation runs
  under one lock per process (stronger than DynamoDB's per-item atomicity; it costs nothing
  measurable next to moto's request parsing).
- An SQS message that was sent stays until it is deleted, and a deleted one does not come
  back. moto's ``Queue.delete_message`` rebuilds the queue's message list from a snapshot and
  assigns it back without the queue's lock, so a message sent meanwhile vanished (one order in
  ~10,000 in a chaos run: accepted by the API, never seen by the intake, in no queue) and a
  message deleted meanwhile came back. Deletes and receives (which mark messages received and
  move them to the DLQ) now hold the queue's own lock, which ``add_message`` already takes; a
  long poll releases it while it waits.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from moto.dynamodb.models import DynamoDBBackend
from moto.sqs.models import Queue, SQSBackend

DYNAMODB_ITEM_OPERATIONS: Final = (
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


def fidelity_patches() -> list[Patch]:
    """Every correction in this module (see the module docstring)."""
    return [*atomic_dynamodb_item_operations(), *atomic_sqs_message_lists()]


@contextlib.contextmanager
def fidelity_applied() -> Iterator[None]:
    """``fidelity_patches()`` in force for the block, the previous methods back after it."""
    patches = fidelity_patches()
    undo = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        setattr(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, before in undo:
            setattr(owner, attr, before)


def atomic_dynamodb_item_operations() -> list[Patch]:
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
        for name in DYNAMODB_ITEM_OPERATIONS
    ]


def atomic_sqs_message_lists() -> list[Patch]:
    # The queue's Condition wraps an RLock, so nesting (a receive's DLQ move adds to another
    # queue; a batch delete deletes one by one) and Condition.wait (releases it) are safe.
    delete_message = Queue.delete_message
    receive_message = SQSBackend.receive_message

    @functools.wraps(delete_message)
    def locked_delete(queue: Queue, receipt_handle: str) -> None:
        with queue._messages_lock:
            delete_message(queue, receipt_handle)

    @functools.wraps(receive_message)
    def locked_receive(backend: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with backend.get_queue(queue_name)._messages_lock:
            return receive_message(backend, queue_name, *args, **kwargs)

    return [
        (Queue, "delete_message", locked_delete),
        (SQSBackend, "receive_message", locked_receive),
    ]
