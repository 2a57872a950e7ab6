"""Compensation: refund the order's charge, if there is one (F08, F09).

Compensations receive a clean copy of the order (F08). A repeat finds the refund recorded, or
sends the same refund key and gets the original refund back.
"""

from __future__ import annotations

from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.adapters.payments import payment_gateway
from orders_saga.logic.saga.payment_keys import charge_key, refund_key
from orders_saga.logic.saga.step import saga_step
from orders_saga.models import SagaState
from orders_saga.observability import logger, metrics


@saga_step
def refund_payment(state: SagaState) -> dict[str, Any]:
    order_id = state.order.order_id
    gateway = payment_gateway()
    payment = database().run(lambda conn: repo.get_payment(conn, order_id))
    if payment is None:
        # F09: TakePayment may have charged and lost the response; ask the provider.
        charge = gateway.find_charge(reference=order_id)
        if charge is None:
            return {"refunded": False, "reason": "no charge"}
        found = charge
        payment = database().run(
            lambda conn: repo.record_charge(
                conn,
                order_id=order_id,
                idempotency_key=charge_key(order_id),
                charge_id=found.charge_id,
                amount_cents=found.amount_cents,
                currency=state.order.currency,
            )
        )
    if payment.status == "REFUNDED":
        return {"refunded": True, "refund_id": payment.refund_id}
    refund_id = gateway.refund(charge_id=payment.charge_id, key=refund_key(order_id))
    database().run(lambda conn: repo.record_refund(conn, order_id, refund_id))
    metrics.add_metric(name="PaymentsRefunded", unit="Count", value=1)
    logger.info("payment refunded", extra={"charge_id": payment.charge_id, "refund_id": refund_id})
    return {"refunded": True, "refund_id": refund_id}
