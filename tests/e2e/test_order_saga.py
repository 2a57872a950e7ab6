"""End to end through the local stack: API Gateway -> Api -> SQS -> Intake -> the synthesized
state machine -> saga steps -> PostgreSQL, with the fake payment provider.

Every test counts side effects (rows, charges at the provider, executions), not just statuses.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from orders_saga.models import Order, OrderAcceptedV2, OrderLine

from tests.localstack import Running, new_key


def order(*lines: tuple[str, int], payment_method: str = "pm_card_visa") -> dict[str, Any]:
    return {
        "items": [{"sku": sku, "quantity": qty} for sku, qty in lines],
        "payment_method": payment_method,
        "currency": "EUR",
    }


def available(running: Running, sku: str) -> int:
    with running.stack.db() as conn:
        row = conn.execute("SELECT available FROM inventory WHERE sku = %s", (sku,)).fetchone()
    assert row is not None
    return int(row[0])


def executions_for(running: Running, order_id: str) -> list[dict[str, Any]]:
    return [e for e in running.stack.executions() if e["name"] == f"order-{order_id}"]


def charges(running: Running, order_id: str) -> int:
    return len(running.stack.provider.ledger.charges_for(order_id))


def refunds(running: Running, order_id: str) -> int:
    charge_ids = {c.charge_id for c in running.stack.provider.ledger.charges_for(order_id)}
    return sum(1 for r in running.stack.provider.ledger.refunds if r.charge_id in charge_ids)


def test_happy_path_confirms_charges_once_and_keeps_the_stock(running: Running) -> None:
    before = available(running, "SKU-COFFEE")

    status, accepted = running.api.post_order(running.alice, order(("SKU-COFFEE", 2)), new_key())
    final = running.api.wait_terminal(running.alice, accepted["order_id"])

    assert status == 202
    assert accepted["status_url"] == f"/dev/orders/{accepted['order_id']}"  # the stage kept
    assert final["status"] == "CONFIRMED"
    assert final["amount_cents"] == 2 * 2450
    assert charges(running, accepted["order_id"]) == 1
    assert available(running, "SKU-COFFEE") == before - 2
    assert len(executions_for(running, accepted["order_id"])) == 1


def test_out_of_stock_charges_nothing_and_takes_no_stock(running: Running) -> None:
    apples = available(running, "SKU-APPLE")

    _, accepted = running.api.post_order(
        running.bob, order(("SKU-APPLE", 1), ("SKU-SOLD-OUT", 1)), new_key()
    )
    final = running.api.wait_terminal(running.bob, accepted["order_id"])

    assert final["status"] == "FAILED"
    assert (final["failure_code"], final["failure_message"]) == (
        "out_of_stock",
        "One or more items are out of stock. Nothing was charged.",
    )
    assert "failure_reason" not in final  # the cause is for operators (issue 10)
    assert charges(running, accepted["order_id"]) == 0
    assert available(running, "SKU-APPLE") == apples


def test_a_declined_payment_releases_the_inventory(running: Running) -> None:
    tea = available(running, "SKU-TEA")

    _, accepted = running.api.post_order(
        running.alice, order(("SKU-TEA", 3), payment_method="pm_card_declined"), new_key()
    )
    final = running.api.wait_terminal(running.alice, accepted["order_id"])

    assert final["status"] == "FAILED"
    assert final["failure_code"] == "payment_declined"
    assert charges(running, accepted["order_id"]) == 0
    assert available(running, "SKU-TEA") == tea


def test_a_retried_post_creates_one_order(running: Running) -> None:
    key = new_key()
    body = order(("SKU-PEAR", 1))

    answers = [running.api.post_order(running.alice, body, key) for _ in range(3)]
    order_id = answers[0][1]["order_id"]
    running.api.wait_terminal(running.alice, order_id)

    assert [a[0] for a in answers] == [202, 202, 202]
    assert all(a[1] == answers[0][1] for a in answers)
    with running.stack.db() as conn:
        assert conn.execute(
            "SELECT count(*) FROM orders WHERE order_id = %s", (order_id,)
        ).fetchone() == (1,)
    assert len(executions_for(running, order_id)) == 1
    assert charges(running, order_id) == 1


def test_the_same_key_with_a_different_body_is_refused(running: Running) -> None:
    key = new_key()
    _, first = running.api.post_order(running.bob, order(("SKU-PEAR", 1)), key)

    status, refused = running.api.post_order(running.bob, order(("SKU-PEAR", 2)), key)

    assert status == 422
    assert "different request body" in refused["message"]
    running.api.wait_terminal(running.bob, first["order_id"])
    assert charges(running, first["order_id"]) == 1


def test_a_duplicate_sqs_delivery_runs_one_execution_and_charges_once(running: Running) -> None:
    _, accepted = running.api.post_order(running.bob, order(("SKU-APPLE", 2)), new_key())
    order_id = accepted["order_id"]
    duplicate = OrderAcceptedV2.for_order(
        Order(
            order_id=order_id,
            customer_id=running.customer_id(running.bob),
            items=[OrderLine(sku="SKU-APPLE", quantity=2)],
            payment_method="pm_card_visa",
            currency="EUR",
        )
    )

    for _ in range(3):
        running.stack.send_raw_message(duplicate.model_dump_json())
    running.api.wait_terminal(running.bob, order_id)
    assert running.stack.wait_until_settled(timeout_s=60)

    assert len(executions_for(running, order_id)) == 1
    assert charges(running, order_id) == 1


def test_a_malformed_message_goes_to_the_dlq_with_its_reason_logged(running: Running) -> None:
    body = '{"schema_version": "2", "order_id": 7, "items": "broken"'

    running.stack.send_raw_message(body)
    assert running.stack.wait_until_settled(timeout_s=60)

    resources = running.stack.resources
    assert resources is not None
    parked = [
        m for m in running.stack.queue_messages(resources.intake_dlq_url) if m["Body"] == body
    ]
    assert len(parked) == 1
    assert parked[0]["MessageAttributes"]["failure_reason"]["StringValue"].startswith(
        "invalid message"
    )
    logged = [
        line
        for line in running.logs.json_lines()
        if line.get("message") == "message rejected to the DLQ"
        and "invalid message" in str(line.get("reason"))
    ]
    assert logged, "the intake must log why it rejected the message"


def test_a_lost_charge_response_is_retried_and_charged_once(running: Running) -> None:
    """Given the provider charges but TakePayment never sees the answer (it fails right after
    the side effect), the saga retries with the same Idempotency-Key and the order is charged
    exactly once (F09)."""
    running.stack.provider.faults.set(lose_next_charge_responses=1)

    _, accepted = running.api.post_order(running.alice, order(("SKU-COFFEE", 1)), new_key())
    final = running.api.wait_terminal(running.alice, accepted["order_id"])

    assert final["status"] == "CONFIRMED"
    assert charges(running, accepted["order_id"]) == 1
    assert refunds(running, accepted["order_id"]) == 0
    take_payment = [
        n
        for fn, n in running.stack.counter.by_order[accepted["order_id"]].items()
        if "TakePayment" in fn
    ]
    assert take_payment == [2]  # the first attempt failed after the charge, the retry replayed it


def test_a_customer_cannot_read_another_customers_order(running: Running) -> None:
    _, accepted = running.api.post_order(running.alice, order(("SKU-PEAR", 1)), new_key())

    mine, _ = running.api.get_order(running.alice, accepted["order_id"])
    theirs, body = running.api.get_order(running.bob, accepted["order_id"])

    assert mine == 200
    assert theirs == 404
    assert body == {"message": "Order not found", "reason": ""}


def api_invocations(running: Running) -> int:
    api = running.stack.resources.function("api") if running.stack.resources else None
    assert api is not None
    return sum(worker.invocations for worker in running.stack.pools[api.logical_id].workers)


def test_the_gateway_rejects_bad_requests_before_the_function(running: Running) -> None:
    invocations_before = api_invocations(running)

    no_token = running.api.post_order(None, order(("SKU-PEAR", 1)), new_key())
    bad_token = running.api.post_order("not-a-jwt", order(("SKU-PEAR", 1)), new_key())
    no_key = running.api.post_order(running.alice, order(("SKU-PEAR", 1)), None)
    bad_body = running.api.post_order(
        running.alice, {"items": [{"sku": "SKU-PEAR", "quantity": "lots"}]}, new_key()
    )
    not_json = running.api.post_order(running.alice, "{nope", new_key())

    assert no_token[0] == 401
    assert bad_token[0] == 401
    assert no_key[0] == 400
    assert "Idempotency-Key" in json.dumps(no_key[1])
    assert bad_body[0] == 400
    assert bad_body[1].get("reason")
    assert not_json[0] == 400
    assert api_invocations(running) == invocations_before


def test_a_step_that_dies_after_charging_is_retried_and_charges_once(running: Running) -> None:
    """Given TakePayment's environment dies after the provider charged and before it answered
    (F01/F09), the retry outlasts the dead attempt's idempotency record, replays the charge by
    its Idempotency-Key, and the order is confirmed with exactly one charge and no refund."""
    stack = running.stack
    take_payment = stack.resources.function("take_payment") if stack.resources else None
    assert take_payment is not None
    pool = stack.pools[take_payment.logical_id]
    stack.provider.faults.set(latency_ms=2500)  # the charge is booked, the answer is late

    _, accepted = running.api.post_order(running.alice, order(("SKU-TEA", 1)), new_key())
    order_id = accepted["order_id"]
    deadline = time.monotonic() + 30
    while not charges(running, order_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert charges(running, order_id) == 1, "the provider never saw the charge"
    killed = [w.pid for w in pool.workers if w.pid is not None]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    stack.provider.faults.set(latency_ms=0)
    final = running.api.wait_terminal(running.alice, order_id, timeout_s=90)

    assert killed
    assert final["status"] == "CONFIRMED"
    assert charges(running, order_id) == 1
    assert refunds(running, order_id) == 0
    # The dead attempt, then one or two more (a retry may run out of its own time waiting).
    assert stack.counter.by_order[order_id][take_payment.logical_id] >= 2
