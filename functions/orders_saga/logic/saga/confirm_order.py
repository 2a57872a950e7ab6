"""Confirm the order: the status guard makes a repeat return the status it finds."""

from __future__ import annotations

from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.logic.saga.step import saga_step
from orders_saga.models import SagaState
from orders_saga.observability import metrics


@saga_step
def confirm_order(state: SagaState) -> dict[str, Any]:
    status = database().run(lambda conn: repo.confirm_order(conn, state.order.order_id))
    metrics.add_metric(name="OrdersConfirmed", unit="Count", value=1)
    return {"status": status}
