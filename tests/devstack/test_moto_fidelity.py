"""AWS's atomicity where moto lacks it (``devstack.moto_fidelity``), proven by racing threads.

- DynamoDB conditional writes are atomic per item: Powertools idempotency (every function's)
  rests on it. Unpatched moto let two racing ``PutItem`` calls through, and the same POST sent
  five times at once was accepted twice. The local stack's own DynamoDB server is raced over
  HTTP in tests/e2e/test_stack_dynamodb.py.
- An SQS message sent is kept until deleted, and a deleted one stays deleted. Unpatched moto
  lost messages sent while another was deleted (one order in ~10,000 in a chaos run).

Each race runs with threads switching every 0.1 ms instead of every 5 ms, so a missing lock
shows on every run instead of once in thousands."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from moto.dynamodb.exceptions import ConditionalCheckFailed
from moto.dynamodb.models import DynamoDBBackend
from moto.sqs.models import Queue, SQSBackend

from devstack.moto_fidelity import DYNAMODB_ITEM_OPERATIONS, fidelity_applied

KEYS = 40
WRITERS_PER_KEY = 6
ROUNDS = 3
POWERTOOLS_CONDITION = (  # what Powertools' DynamoDBPersistenceLayer saves INPROGRESS with
    "attribute_not_exists(#id) OR #expiry < :now OR (#status = :inprogress AND "
    "attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)"
)
TABLE = "idempotency"
CONDITION_NAMES = {
    "#id": "id",
    "#expiry": "expiration",
    "#in_progress_expiry": "in_progress_expiration",
    "#status": "status",
}


def condition_values(now_s: int) -> dict[str, dict[str, str]]:
    return {
        ":now": {"N": str(now_s)},
        ":now_in_millis": {"N": str(now_s * 1000)},
        ":inprogress": {"S": "INPROGRESS"},
    }


def inprogress_record(key: str, now_s: int) -> dict[str, dict[str, str]]:
    """An INPROGRESS idempotency record as Powertools writes it (in DynamoDB's JSON)."""
    return {
        "id": {"S": key},
        "status": {"S": "INPROGRESS"},
        "expiration": {"N": str(now_s + 3600)},
    }


@contextlib.contextmanager
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every 0.1 ms (default 5 ms), so a read-check-write without a lock is
    interleaved: unpatched, about a third of the keys raced here get two or more winners."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


ACCOUNT = "123456789012"
REGION = "eu-west-1"


@pytest.fixture
def fidelity() -> Iterator[None]:
    """``fidelity_patches()`` applied for the test, as every moto process here applies them."""
    with fidelity_applied():
        yield


def start_all(threads: list[threading.Thread]) -> None:
    """Start the threads (each waits on a shared barrier) and wait for them, switching often."""
    with frequent_thread_switches():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)


@pytest.fixture
def atomic_backend(fidelity: None) -> DynamoDBBackend:
    """A fresh in-process DynamoDB backend (not moto's registry) with the patches applied."""
    backend = DynamoDBBackend(region_name=REGION, account_id=ACCOUNT)
    backend.create_table(
        TABLE,
        schema=[{"AttributeName": "id", "KeyType": "HASH"}],
        throughput=None,
        attr=[{"AttributeName": "id", "AttributeType": "S"}],
        global_indexes=None,
        indexes=None,
        streams=None,
        billing_mode="PAY_PER_REQUEST",
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=None,
        warm_throughput=None,
    )
    return backend


def test_racing_idempotency_records_on_one_key_let_exactly_one_through(
    atomic_backend: DynamoDBBackend,
) -> None:
    """Given moto's DynamoDB with ``atomic_dynamodb_item_operations``, when six writers per key
    (40 keys, three rounds) race Powertools' INPROGRESS PutItem, conditioned on the key not
    existing or its record having expired, then exactly one writer per key succeeds.

    Fails if: a patched operation stops holding the lock (unpatched, ~70 of the 120 keys had
    two or more winners)."""
    now_s = int(time.time())
    winners: Counter[str] = Counter()
    lock = threading.Lock()

    def write(barrier: threading.Barrier, key: str) -> None:
        barrier.wait()
        with contextlib.suppress(ConditionalCheckFailed):
            atomic_backend.put_item(
                TABLE,
                inprogress_record(key, now_s),
                condition_expression=POWERTOOLS_CONDITION,
                expression_attribute_names=CONDITION_NAMES,
                expression_attribute_values=condition_values(now_s),
            )
            with lock:
                winners[key] += 1

    keys = [f"key-{round_}-{i}" for round_ in range(ROUNDS) for i in range(KEYS)]
    for start in range(0, len(keys), KEYS):
        racing = [key for key in keys[start : start + KEYS] for _ in range(WRITERS_PER_KEY)]
        barrier = threading.Barrier(len(racing))
        start_all([threading.Thread(target=write, args=(barrier, key)) for key in racing])

    assert {key: winners[key] for key in keys} == dict.fromkeys(keys, 1)


SENT_WHILE_DELETING = 400


def test_a_message_sent_while_others_are_deleted_is_kept_and_the_deleted_stay_deleted(
    fidelity: None,
) -> None:
    """Given a queue holding 400 received messages, when two threads delete them by receipt
    handle while two others send 400 new ones, then exactly the 400 new messages are left.

    Fails if: ``Queue.delete_message`` stops holding the queue's lock (unpatched: a few new
    messages vanish and over a hundred deleted ones come back, every run)."""
    sqs = SQSBackend(region_name=REGION, account_id=ACCOUNT)
    queue: Queue = sqs.create_queue("orders")
    received = [sqs.send_message("orders", f"old-{i}") for i in range(SENT_WHILE_DELETING)]
    for message in received:
        message.mark_received(visibility_timeout=300)
    handles = [str(message.receipt_handle) for message in received]
    half = SENT_WHILE_DELETING // 2
    barrier = threading.Barrier(4)

    def delete(some: list[str]) -> None:
        barrier.wait()
        for handle in some:
            queue.delete_message(handle)

    def send(sender: int) -> None:
        barrier.wait()
        for i in range(half):
            sqs.send_message("orders", f"new-{sender}-{i}")

    start_all(
        [
            threading.Thread(target=delete, args=(handles[:half],)),
            threading.Thread(target=delete, args=(handles[half:],)),
            threading.Thread(target=send, args=(0,)),
            threading.Thread(target=send, args=(1,)),
        ]
    )

    left = sorted(message.body for message in queue._messages)
    assert left == sorted(f"new-{s}-{i}" for s in range(2) for i in range(half))


def test_the_function_tests_moto_server_has_the_fidelity_patches(moto_server: str) -> None:
    """Given the function tests' moto server (``moto_server``), then the DynamoDB item
    operations and SQS deletes/receives in its process are the locked ones (the races above
    are what the locks prevent).

    Fails if: the fixture stops applying ``fidelity_patches``."""
    patched = [
        *(getattr(DynamoDBBackend, name) for name in DYNAMODB_ITEM_OPERATIONS),
        Queue.delete_message,
        SQSBackend.receive_message,
    ]
    assert [f.__qualname__ for f in patched if not hasattr(f, "__wrapped__")] == []
