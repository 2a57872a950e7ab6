"""Deterministic order ids (F01): the same (customer, Idempotency-Key) is always the same order."""

from __future__ import annotations

import uuid

# Fixed namespace: changing it would give every retried request a new order id.
ORDER_NAMESPACE = uuid.UUID("5b0f4a52-9c1e-4d8e-a0a3-2f0b6f1d7c44")


def order_id_for(customer_id: str, idempotency_key: str) -> str:
    return str(uuid.uuid5(ORDER_NAMESPACE, f"{customer_id}\x1f{idempotency_key}"))


EXECUTION_PREFIX = "order-"


def execution_name_for(order_id: str) -> str:
    """Step Functions refuses a second execution with this name (F01)."""
    return f"{EXECUTION_PREFIX}{order_id}"


def order_id_of_execution(execution_name: str) -> str:
    """The order an execution named by ``execution_name_for`` runs (reports, runbooks)."""
    return execution_name.removeprefix(EXECUTION_PREFIX)


def is_order_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
