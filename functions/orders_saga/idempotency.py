"""Idempotency settings in one place (F01, F10).

Records live in DynamoDB (pk ``id``, TTL ``expiration``). Two units keep them (ADR 0012):
``place_order`` in the Api and ``start_saga`` in the Intake. Each is keyed on business identity
with a stable ``key_prefix``, validates the payload (same key + different payload is an error,
not a silent replay), and registers the Lambda context so an in-progress record expires with
the invocation that created it. A replayed result emits
the ``DuplicatesSuppressed`` metric (F01 detection).

A Powertools persistence layer keeps the first configuration it is given, so each use case
gets its own layer (``persistence_layer()`` returns a new one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from orders_saga import aws_clients
from orders_saga.config import idempotency_table, idempotency_ttl_s
from orders_saga.observability import logger, metrics


def _duplicate_suppressed(response: Any, idempotent_data: DataRecord) -> Any:
    metrics.add_metric(name="DuplicatesSuppressed", unit="Count", value=1)
    logger.info(
        "duplicate suppressed; returning the stored result",
        extra={"idempotency_key": idempotent_data.idempotency_key},
    )
    return response


def persistence_layer() -> DynamoDBPersistenceLayer:
    """Built at init (F04: once per environment); constructing it makes no network call."""
    return DynamoDBPersistenceLayer(
        table_name=idempotency_table(), boto3_client=aws_clients.dynamodb()
    )


def idempotency_config(*, key: str, payload: str) -> IdempotencyConfig:
    return IdempotencyConfig(
        event_key_jmespath=key,
        payload_validation_jmespath=payload,
        raise_on_no_idempotency_key=True,
        expires_after_seconds=idempotency_ttl_s(),
        response_hook=_duplicate_suppressed,
    )


F = TypeVar("F", bound=Callable[..., Any])


def idempotent(
    *, data_keyword_argument: str, config: IdempotencyConfig, key_prefix: str
) -> Callable[[F], F]:
    """Powertools ``idempotent_function`` with a fresh persistence layer and a typed signature."""
    decorator = idempotent_function(
        data_keyword_argument=data_keyword_argument,
        config=config,
        persistence_store=persistence_layer(),
        key_prefix=key_prefix,
    )
    return cast("Callable[[F], F]", decorator)
