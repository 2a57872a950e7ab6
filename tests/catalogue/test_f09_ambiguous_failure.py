"""F09 Ambiguous failure, the refund side: the provider refunds but the answer is lost.

A lost *charge* answer is proven in tests/e2e/test_order_saga.py
(``test_a_lost_charge_response_is_retried_and_charged_once``) and at the adapter in
tests/functions/test_payment_gateway.py; this module adds the compensation's half. The steps
run in their own execution environments on the full local stack (the worker processes), invoked
with the payloads Step Functions sends, so the retry is exactly what RefundPayment's Retry
does after a TransientError.
"""

from __future__ import annotations

import pytest

from devstack.payment_provider import RandomFaults
from tests.catalogue.full_stack import (
    events,
    fresh_sku,
    insert_received_order,
    invoke_ok,
    pool,
    two_environments,
)
from tests.localstack import Running


@pytest.mark.parametrize("retried_in", ["the same environment", "another environment"])
def test_f09_a_lost_refund_response_is_retried_and_refunds_once(
    running: Running, retried_in: str
) -> None:
    """Given a charged order being compensated, when the provider books the refund but the
    connection drops before RefundPayment sees the answer (so the step fails with a
    TransientError), then the retry, in the same or in another environment, sends the same
    Idempotency-Key, gets the original refund back and records it: one refund at the provider,
    the payment REFUNDED with that refund's id, one REFUNDED event.

    Fails if: refund_payment stops passing `<order>:refund` as the Idempotency-Key (a new key:
    the provider refuses a second refund of the charge with 409 and the compensation escalates),
    or the step records a refund it never got an answer for.
    """
    stack = running.stack
    provider = stack.provider
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=10)
    order = insert_received_order(running, sku, 2)
    state = {"order": order.model_dump(mode="json")}
    state["reservation"] = invoke_ok(pool(stack, "reserve_inventory"), state)
    state["payment"] = invoke_ok(pool(stack, "take_payment"), state)
    compensation = {
        "order": state["order"],
        "error": {"Error": "TransientError", "Cause": "ConfirmOrder ran out of attempts"},
    }
    first, second = two_environments(stack, "refund_payment")
    retry_in = first if retried_in == "the same environment" else second

    provider.faults.set_random(RandomFaults(lost_response_rate=1.0))
    try:
        lost = first.invoke(compensation)
    finally:
        provider.faults.set_random(RandomFaults())
    booked = [r for r in provider.ledger.refunds if r.charge_id == state["payment"]["charge_id"]]
    retried = invoke_ok(retry_in, compensation)

    refunds = [r for r in provider.ledger.refunds if r.charge_id == state["payment"]["charge_id"]]
    with stack.db() as conn:
        payment = conn.execute(
            "SELECT status, refund_id FROM payments WHERE order_id = %s", (order.order_id,)
        ).fetchone()
        history = events(conn, order.order_id)
    assert lost.errored
    assert lost.json()["errorType"] == "TransientError", lost.payload
    assert len(booked) == 1, "the provider must have refunded before the answer was lost"
    assert len(refunds) == 1
    assert retried == {"refunded": True, "refund_id": refunds[0].refund_id}
    assert payment == ("REFUNDED", refunds[0].refund_id)
    assert history["REFUNDED"] == 1
    assert len(provider.ledger.charges_for(order.order_id)) == 1
