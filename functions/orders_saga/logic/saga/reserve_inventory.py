"""Reserve the order's stock (F10): the order row is locked, a repeat returns the existing
reservation, and the conditional update and the CHECK refuse to oversell."""

from __future__ import annotations

from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.logic.saga.step import saga_step
from orders_saga.models import SagaState
from orders_saga.observability import metrics


@saga_step
def reserve_inventory(state: SagaState) -> dict[str, Any]:
    reservation = database().run(lambda conn: repo.reserve_inventory(conn, state.order))
    units = sum(line.quantity for line in reservation.lines)
    metrics.add_metric(name="UnitsReserved", unit="Count", value=units)
    return reservation.model_dump(mode="json")
