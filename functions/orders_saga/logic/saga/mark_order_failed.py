"""Compensation: record why the order failed; a repeat returns the status it finds."""

from __future__ import annotations

from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.logic.saga.step import saga_step
from orders_saga.models import SagaState
from orders_saga.observability import metrics


@saga_step
def mark_order_failed(state: SagaState) -> dict[str, Any]:
    reason = state.failure_reason()
    status = database().run(lambda conn: repo.mark_failed(conn, state.order.order_id, reason))
    metrics.add_metric(name="OrdersFailed", unit="Count", value=1)
    return {"status": status, "reason": reason}
