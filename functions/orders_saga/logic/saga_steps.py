"""The saga's steps and compensations: one idempotent function each, keyed on (order, step).

Each step is safe to run again after its first attempt committed (F01): Powertools returns
the stored result while the record lives, and the database writes are idempotent underneath
for the time after it expires. Compensations receive a clean copy of the order (F08).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orders_saga.adapters import orders_repository as repo
from orders_saga.adapters.database import database
from orders_saga.adapters.payments import payment_gateway
from orders_saga.idempotency import idempotency_config, idempotent
from orders_saga.models import SagaState
from orders_saga.observability import logger, metrics

StepFunction = Callable[..., dict[str, Any]]

# Key: the order id; the step is the key prefix. Payload check: the same order, so a step can
# never replay another order's result.
step_idempotency = idempotency_config(key="order.order_id", payload="order")


def _step(name: str) -> Callable[[Callable[[SagaState], dict[str, Any]]], StepFunction]:
    """Make ``fn(state)`` an idempotent step taking the raw task input as ``state=``."""

    def decorate(fn: Callable[[SagaState], dict[str, Any]]) -> StepFunction:
        @idempotent(data_keyword_argument="state", config=step_idempotency, key_prefix=name)
        def run(state: dict[str, Any]) -> dict[str, Any]:
            return fn(SagaState.model_validate(state))

        run.__name__ = name
        return run

    return decorate


def charge_key(order_id: str) -> str:
    return f"{order_id}:charge"


def refund_key(order_id: str) -> str:
    return f"{order_id}:refund"


@_step("reserve_inventory")
def reserve_inventory(state: SagaState) -> dict[str, Any]:
    reservation = database().run(lambda conn: repo.reserve_inventory(conn, state.order))
    units = sum(line.quantity for line in reservation.lines)
    metrics.add_metric(name="UnitsReserved", unit="Count", value=units)
    return reservation.model_dump(mode="json")


@_step("take_payment")
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


@_step("confirm_order")
def confirm_order(state: SagaState) -> dict[str, Any]:
    status = database().run(lambda conn: repo.confirm_order(conn, state.order.order_id))
    metrics.add_metric(name="OrdersConfirmed", unit="Count", value=1)
    return {"status": status}


@_step("refund_payment")
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


@_step("release_inventory")
def release_inventory(state: SagaState) -> dict[str, Any]:
    units = database().run(lambda conn: repo.release_inventory(conn, state.order.order_id))
    if units:
        # Every order that held stock passes here when it fails: the "compensated" count.
        metrics.add_metric(name="OrdersCompensated", unit="Count", value=1)
    return {"released_units": units}


@_step("mark_order_failed")
def mark_order_failed(state: SagaState) -> dict[str, Any]:
    reason = state.failure_reason()
    status = database().run(lambda conn: repo.mark_failed(conn, state.order.order_id, reason))
    metrics.add_metric(name="OrdersFailed", unit="Count", value=1)
    return {"status": status, "reason": reason}
