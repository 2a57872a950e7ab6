"""The ops tool reads idempotency records by exact key: prove its keys are the functions'."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)

from ops.idempotency import KEY_PREFIXES, idempotency_key

LOGIC = Path(__file__).resolve().parents[2] / "functions" / "orders_saga" / "logic"


def test_key_prefixes_are_the_functions_prefixes() -> None:
    steps = re.findall(r'@_step\("(\w+)"\)', (LOGIC / "saga_steps.py").read_text())
    intake = re.findall(r'key_prefix="(\w+)"', (LOGIC / "intake.py").read_text())

    assert set(KEY_PREFIXES) == {*steps, *intake}


def _config(name: str) -> IdempotencyConfig:
    from orders_saga.logic.intake import start_saga_idempotency
    from orders_saga.logic.saga_steps import step_idempotency

    return start_saga_idempotency if name == "start_saga" else step_idempotency


@pytest.mark.parametrize("prefix", KEY_PREFIXES)
def test_keys_match_powertools_hashing(prefix: str) -> None:
    # Given the functions' own idempotency configs and a Powertools persistence layer
    order_id = str(uuid.uuid4())
    layer = DynamoDBPersistenceLayer(
        table_name="unused", boto3_client=boto3.client("dynamodb", region_name="eu-west-1")
    )
    layer.configure(config=_config(prefix), key_prefix=prefix)
    # The intake keys on the order itself, the steps on the saga state's order.
    event: dict[str, Any] = (
        {"order_id": order_id} if prefix == "start_saga" else {"order": {"order_id": order_id}}
    )

    # Then Powertools computes the key ops looks up
    assert layer._get_hashed_idempotency_key(event) == idempotency_key(prefix, order_id)
