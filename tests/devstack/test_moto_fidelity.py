"""DynamoDB's conditional writes are atomic per item, in AWS and in every moto server here.

Powertools idempotency (every function's) rests on it: of two racing ``PutItem`` calls with
``attribute_not_exists``, exactly one may succeed. Unpatched moto let both through, and the
same POST sent five times at once was accepted twice (see ``devstack.moto_fidelity``).
The local stack's own server is raced over HTTP in tests/e2e/test_stack_dynamodb.py."""

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

from devstack.moto_fidelity import ITEM_OPERATIONS, atomic_dynamodb_item_operations

KEYS = 40
WRITERS_PER_KEY = 6
ROUNDS = 3
POWERTOOLS_CONDITION = (  # what Powertools' DynamoDBPersistenceLayer saves INPROGRESS with
    "attribute_not_exists(#id) OR #expiry < :now OR (#status = :inprogress AND "
    "attribute_exists(#in_progress_expiry) AND #in_progress_expiry < :now_in_millis)"
)
TABLE = "idempotency"


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


@pytest.fixture
def atomic_backend() -> Iterator[DynamoDBBackend]:
    """A fresh in-process DynamoDB backend (not moto's registry) with the patches applied."""
    patches = atomic_dynamodb_item_operations()
    undo = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        setattr(owner, attr, value)
    try:
        backend = DynamoDBBackend(region_name="eu-west-1", account_id="123456789012")
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
        yield backend
    finally:
        for owner, attr, before in undo:
            setattr(owner, attr, before)


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
                {
                    "id": {"S": key},
                    "status": {"S": "INPROGRESS"},
                    "expiration": {"N": str(now_s + 3600)},
                },
                condition_expression=POWERTOOLS_CONDITION,
                expression_attribute_names={
                    "#id": "id",
                    "#expiry": "expiration",
                    "#in_progress_expiry": "in_progress_expiration",
                    "#status": "status",
                },
                expression_attribute_values={
                    ":now": {"N": str(now_s)},
                    ":now_in_millis": {"N": str(now_s * 1000)},
                    ":inprogress": {"S": "INPROGRESS"},
                },
            )
            with lock:
                winners[key] += 1

    keys = [f"key-{round_}-{i}" for round_ in range(ROUNDS) for i in range(KEYS)]
    for start in range(0, len(keys), KEYS):
        racing = [key for key in keys[start : start + KEYS] for _ in range(WRITERS_PER_KEY)]
        barrier = threading.Barrier(len(racing))
        threads = [threading.Thread(target=write, args=(barrier, key)) for key in racing]
        with frequent_thread_switches():
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)

    assert {key: winners[key] for key in keys} == dict.fromkeys(keys, 1)


def test_the_function_tests_moto_server_makes_item_operations_atomic(moto_server: str) -> None:
    """Given the function tests' moto server (``moto_server``), then every DynamoDB item
    operation in its process is the locked one (the race above is what the lock prevents).

    Fails if: the fixture stops applying ``atomic_dynamodb_item_operations``."""
    unlocked = [
        n for n in ITEM_OPERATIONS if not hasattr(getattr(DynamoDBBackend, n), "__wrapped__")
    ]
    assert unlocked == []
