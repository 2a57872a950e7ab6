"""Compensation: give the order's reserved stock back; a repeat releases nothing more."""

from __future__ import annotations

from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.logic.saga.step import saga_step
from orders_saga.models import SagaState
from orders_saga.observability import metrics


@saga_step
def release_inventory(state: SagaState) -> dict[str, Any]:
    units = database().run(lambda conn: repo.release_inventory(conn, state.order.order_id))
    if units:
        # Every order that held stock passes here when it fails: the "compensated" count.
        metrics.add_metric(name="OrdersCompensated", unit="Count", value=1)
    return {"released_units": units}
