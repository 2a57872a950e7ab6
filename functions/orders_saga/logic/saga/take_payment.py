"""Charge the order (F09): the provider deduplicates on the order's charge key, and the charge
is recorded with ``ON CONFLICT DO NOTHING``, so a repeat returns the first charge."""

from __future__ import annotations

from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.adapters.payments import payment_gateway
from orders_saga.logic.saga.payment_keys import charge_key
from orders_saga.logic.saga.step import saga_step
from orders_saga.models import SagaState
from orders_saga.observability import metrics


@saga_step
def take_payment(state: SagaState) -> dict[str, Any]:
    if state.reservation is None:
        raise ValueError("take_payment needs the reservation result")
    order = state.order
    key = charge_key(order.order_id)
    charge = payment_gateway().charge(
        reference=order.order_id,
        amount_cents=state.reservation.amount_cents,
        currency=order.currency,
        payment_method=order.payment_method,
        key=key,
    )
    database().run(
        lambda conn: repo.record_charge(
            conn,
            order_id=order.order_id,
            idempotency_key=key,
            charge_id=charge.charge_id,
            amount_cents=charge.amount_cents,
            currency=order.currency,
        )
    )
    metrics.add_metric(name="PaymentsTaken", unit="Count", value=1)
    return {"charge_id": charge.charge_id, "amount_cents": charge.amount_cents}
