"""The ops tool reads idempotency records by exact key: prove its keys are the functions'."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)

from ops.idempotency import KEY_PREFIXES, NOT_KEYED_ON_ORDER_ID, idempotency_key

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions" / "orders_saga"


def test_key_prefixes_are_the_functions_prefixes() -> None:
    # Given every Powertools key prefix the function code declares (ADR 0012: the Api's
    # place_order and the Intake's start_saga; the saga steps keep no records)
    declared = {
        prefix
        for module in FUNCTIONS.rglob("*.py")
        for prefix in re.findall(r'key_prefix="(\w+)"', module.read_text())
    }

    # Then ops looks up each one it can derive from an order id, and knows why it skips the rest
    assert set(KEY_PREFIXES) | NOT_KEYED_ON_ORDER_ID == declared
    assert not set(KEY_PREFIXES) & NOT_KEYED_ON_ORDER_ID


def _config(prefix: str) -> IdempotencyConfig:
    from orders_saga.logic.intake import start_saga_idempotency

    # A prefix added to KEY_PREFIXES without its config here fails with a KeyError.
    return {"start_saga": start_saga_idempotency}[prefix]


@pytest.mark.parametrize("prefix", KEY_PREFIXES)
def test_keys_match_powertools_hashing(prefix: str) -> None:
    # Given the function's own idempotency config and a Powertools persistence layer
    order_id = str(uuid.uuid4())
    layer = DynamoDBPersistenceLayer(
        table_name="unused", boto3_client=boto3.client("dynamodb", region_name="eu-west-1")
    )
    layer.configure(config=_config(prefix), key_prefix=prefix)

    # Then Powertools computes, from the order the intake receives, the key ops looks up
    key = layer._get_hashed_idempotency_key({"order_id": order_id, "customer_id": "c-1"})
    assert key == idempotency_key(prefix, order_id)
