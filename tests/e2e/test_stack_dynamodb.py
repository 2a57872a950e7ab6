"""The local stack's DynamoDB (its own moto process) keeps conditional writes atomic per item,
which every function's Powertools idempotency relies on (see ``devstack.moto_fidelity``)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import boto3
from botocore.config import Config

from tests.devstack.test_moto_fidelity import (
    CONDITION_NAMES,
    KEYS,
    POWERTOOLS_CONDITION,
    WRITERS_PER_KEY,
    condition_values,
    inprogress_record,
)
from tests.localstack import Running


def test_racing_idempotency_records_in_the_stack_let_exactly_one_through(
    running: Running,
) -> None:
    """Given the local stack, when six writers per key (40 keys) race Powertools' INPROGRESS
    PutItem against its DynamoDB over HTTP, then exactly one writer per key succeeds and the
    other five are refused with ConditionalCheckFailedException.

    Fails if: ``devstack.moto_process`` stops applying ``fidelity_patches``.
    That server runs in another process, where threads switch at the default interval, so the
    race shows there only now and then (a CI run once accepted one POST twice); the proof that
    the lock prevents it is tests/devstack/test_moto_fidelity.py."""
    aws = running.stack.aws
    assert aws is not None
    dynamodb: Any = boto3.client(
        "dynamodb",
        endpoint_url=aws.endpoint_for("dynamodb"),
        region_name=aws.template.region,
        config=Config(max_pool_connections=KEYS * WRITERS_PER_KEY, retries={"max_attempts": 1}),
    )
    table = f"race-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    now_s = int(time.time())
    outcomes: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    keys = [f"key-{i}" for i in range(KEYS)]
    racing = [key for key in keys for _ in range(WRITERS_PER_KEY)]
    barrier = threading.Barrier(len(racing))

    def write(key: str) -> None:
        barrier.wait()
        try:
            dynamodb.put_item(
                TableName=table,
                Item=inprogress_record(key, now_s),
                ConditionExpression=POWERTOOLS_CONDITION,
                ExpressionAttributeNames=CONDITION_NAMES,
                ExpressionAttributeValues=condition_values(now_s),
            )
            outcome = "won"
        except dynamodb.exceptions.ConditionalCheckFailedException:
            outcome = "refused"
        with lock:
            outcomes[key, outcome] += 1

    try:
        threads = [threading.Thread(target=write, args=(key,)) for key in racing]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        dynamodb.delete_table(TableName=table)

    assert {key: outcomes[key, "won"] for key in keys} == dict.fromkeys(keys, 1)
    assert {key: outcomes[key, "refused"] for key in keys} == dict.fromkeys(
        keys, WRITERS_PER_KEY - 1
    )
