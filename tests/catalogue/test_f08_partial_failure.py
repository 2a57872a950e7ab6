"""F08 Partial failure of a multi-step business process: whichever forward step fails, the
compensations of what may have happened run in reverse order, once each, and the order ends
FAILED with its reason; a compensation that keeps failing goes to the needs-attention queue and
the execution ends in an explicit Fail.

All cases run on the full local stack (the synthesized state machine, the real handlers, the
real PostgreSQL and the fake provider). Each failure is injected where it happens in
production: a SKU out of stock, a declined card, a provider whose answers are lost, and
statements that fail in PostgreSQL itself (a trigger raising what a statement timeout raises,
or a plain error), under the real adapters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import pytest
from psycopg import sql

from infra.config import SAGA_STEPS, stage_config
from tests.catalogue.full_stack import (
    QUERY_CANCELED,
    RAISE_EXCEPTION,
    available,
    charges,
    db_fault,
    events,
    fresh_sku,
    invocations,
    order_body,
    refunds,
    states_entered,
    task_attempts,
    wait_execution,
)
from tests.localstack import Running

FORWARD_STEPS = SAGA_STEPS[:3]  # ReserveInventory, TakePayment, ConfirmOrder
COMPENSATIONS = SAGA_STEPS[3:]  # RefundPayment, ReleaseInventory, MarkOrderFailed
HANDLER = {
    "ReserveInventory": "reserve_inventory",
    "TakePayment": "take_payment",
    "ConfirmOrder": "confirm_order",
    "RefundPayment": "refund_payment",
    "ReleaseInventory": "release_inventory",
    "MarkOrderFailed": "mark_order_failed",
}
ATTEMPTS = stage_config("dev").retry.total_attempts  # what the template's Retry allows (4)
STOCK = 20
QUANTITY = 3


@dataclass(frozen=True)
class Injection:
    """How one forward step is made to fail, and what the saga must do about it."""

    step: str
    kind: str  # "business" (caught at once) or "exhausted" (transient until retries run out)
    error: str  # the error name the order's failure reason starts with
    charged: bool  # did the provider book a charge before the failure?
    payment_method: str = "pm_card_visa"
    fault: Callable[[Running, str], AbstractContextManager[None]] = lambda _r, _s: nullcontext()
    lose_charge_responses: int = 0
    sold_out_line: bool = False

    @property
    def compensations(self) -> list[str]:
        """Entered at the step that undoes the last thing that may have happened (infra/saga.py)."""
        if self.step == "ReserveInventory":
            return ["ReleaseInventory", "MarkOrderFailed"]
        return list(COMPENSATIONS)


def reservation_times_out(running: Running, sku: str) -> AbstractContextManager[None]:
    return db_fault(
        running.stack,
        table="reservations",
        before="INSERT",
        when=sql.SQL("NEW.sku = {}").format(sql.Literal(sku)),
        sqlstate=QUERY_CANCELED,
        message="F08 injected: the reservation statement timed out",
    )


def confirmation_times_out(running: Running, sku: str) -> AbstractContextManager[None]:
    return db_fault(
        running.stack,
        table="orders",
        before="UPDATE",
        when=sql.SQL("NEW.status = 'CONFIRMED' AND NEW.items @> {}::jsonb").format(
            sql.Literal(json.dumps([{"sku": sku}]))
        ),
        sqlstate=QUERY_CANCELED,
        message="F08 injected: the confirmation statement timed out",
    )


def release_is_refused(running: Running, sku: str) -> AbstractContextManager[None]:
    return db_fault(
        running.stack,
        table="reservations",
        before="UPDATE",
        when=sql.SQL("NEW.sku = {} AND NEW.released_at IS NOT NULL").format(sql.Literal(sku)),
        sqlstate=RAISE_EXCEPTION,
        message="F08 injected: releasing the reservation is refused",
    )


INJECTIONS = [
    Injection("ReserveInventory", "business", "OutOfStock", charged=False, sold_out_line=True),
    Injection(
        "ReserveInventory",
        "exhausted",
        "TransientError",
        charged=False,
        fault=reservation_times_out,
    ),
    Injection(
        "TakePayment",
        "business",
        "PaymentDeclined",
        charged=False,
        payment_method="pm_card_declined",
    ),
    # F09 inside F08: every attempt charges (or replays the charge) and loses the answer.
    Injection(
        "TakePayment", "exhausted", "TransientError", charged=True, lose_charge_responses=ATTEMPTS
    ),
    Injection(
        "ConfirmOrder", "exhausted", "TransientError", charged=True, fault=confirmation_times_out
    ),
]


def test_f08_every_forward_step_has_an_injected_failure() -> None:
    """The parametrization below covers every forward step of infra.config.SAGA_STEPS.

    Fails if: a forward step is added to the saga without a failure case here.
    """
    assert {injection.step for injection in INJECTIONS} == set(FORWARD_STEPS)
    assert set(HANDLER) == set(SAGA_STEPS)


@pytest.fixture
def sku(running: Running) -> Iterator[str]:
    with running.stack.db() as conn:
        yield fresh_sku(conn, stock=STOCK)


@pytest.mark.parametrize(
    "injection", INJECTIONS, ids=[f"{i.step}-{i.kind}-{i.error}" for i in INJECTIONS]
)
def test_f08_a_failed_step_is_compensated_in_reverse_order_once(
    running: Running, sku: str, injection: Injection
) -> None:
    """Given an order for 3 units, when `injection.step` fails (a business outcome caught at
    once, or a transient error on every attempt until the Retry runs out), then the saga enters
    the compensations of everything that may have happened, in reverse order, each invoked once:
    the charge (if the provider booked one) is refunded once, the stock is back exactly once,
    and the order is FAILED with the error in its reason.

    Fails if: a Catch is removed or points to the wrong entry (a compensation skipped or run for
    nothing), the compensation chain's order changes, a business error gets retried, a transient
    one is not retried up to MaxAttempts, RefundPayment stops finding a charge whose answer was
    lost (F09), or ReleaseInventory / RefundPayment stop being idempotent (stock or money twice).
    """
    stack = running.stack
    lines = [(sku, QUANTITY)]
    if injection.sold_out_line:
        with stack.db() as conn:
            lines.append((fresh_sku(conn, stock=0), 1))
    stack.provider.faults.set(lose_next_charge_responses=injection.lose_charge_responses)

    with injection.fault(running, sku):
        _, accepted = running.api.post_order(
            running.alice,
            order_body(*lines, payment_method=injection.payment_method),
            f"f08-{uuid.uuid4().hex}",
        )
        order_id = accepted["order_id"]
        execution = wait_execution(running, order_id)

    entered = states_entered(running, order_id)
    failed_at = entered.index(injection.step)
    attempts = task_attempts(running, order_id)
    with stack.db() as conn:
        row = conn.execute(
            "SELECT status, failure_reason FROM orders WHERE order_id = %s", (order_id,)
        ).fetchone()
        history = events(conn, order_id)
        stock = available(conn, sku)
    assert (execution["status"], row[0] if row else None) == ("FAILED", "FAILED")
    assert str(row[1] if row else "").startswith(injection.error)
    assert entered[: failed_at + 1] == list(
        FORWARD_STEPS[: FORWARD_STEPS.index(injection.step) + 1]
    )
    assert entered[failed_at + 1 :] == [*injection.compensations, "OrderFailed"]
    expected_attempts = 1 if injection.kind == "business" else ATTEMPTS
    assert attempts[injection.step] == expected_attempts
    for compensation in COMPENSATIONS:
        ran = compensation in injection.compensations
        assert attempts[compensation] == ran, (compensation, attempts)
        assert invocations(running, order_id, HANDLER[compensation]) == ran, compensation
    assert charges(running, order_id) == int(injection.charged)
    assert refunds(running, order_id) == int(injection.charged)
    assert history["REFUNDED"] == int(injection.charged)
    assert stock == STOCK  # taken and given back once, or never taken
    assert history["INVENTORY_RELEASED"] == int(history["RESERVED"] == 1)
    assert history["FAILED"] == 1


def test_f08_a_compensation_that_keeps_failing_goes_to_needs_attention_once(
    running: Running, sku: str
) -> None:
    """Given an order whose ConfirmOrder times out on every attempt and whose stock release is
    refused by the database on every attempt, when the saga compensates, then the charge is
    refunded once, ReleaseInventory is tried MaxAttempts times, the needs-attention queue gets
    exactly one message naming it, with the order and both errors, and the execution ends in
    the CompensationFailed Fail state: MarkOrderFailed does not run on a half-compensated order,
    which waits for a human (runbook F08).

    Fails if: a compensation's Catch is removed (the error would end the execution without a
    message), the Escalate state is skipped or sends twice, or the chain goes on after a failed
    compensation as if it had succeeded.
    """
    stack = running.stack
    resources = stack.resources
    assert resources is not None

    with confirmation_times_out(running, sku), release_is_refused(running, sku):
        _, accepted = running.api.post_order(
            running.bob, order_body((sku, QUANTITY)), f"f08-{uuid.uuid4().hex}"
        )
        order_id = accepted["order_id"]
        execution = wait_execution(running, order_id)

    entered = states_entered(running, order_id)
    attempts = task_attempts(running, order_id)
    messages = [
        json.loads(m["Body"])
        for m in stack.queue_messages(resources.needs_attention_queue_url)
        if json.loads(m["Body"])["order"]["order_id"] == order_id
    ]
    with stack.db() as conn:
        status = conn.execute(
            "SELECT status FROM orders WHERE order_id = %s", (order_id,)
        ).fetchone()
        stock = available(conn, sku)
    assert (execution["status"], status) == ("FAILED", ("PAID",))
    assert entered == [
        *FORWARD_STEPS,
        "RefundPayment",
        "ReleaseInventory",
        "EscalateReleaseInventory",
        "CompensationFailed",
    ]
    assert attempts["ConfirmOrder"] == ATTEMPTS
    assert attempts["ReleaseInventory"] == ATTEMPTS
    assert attempts["MarkOrderFailed"] == 0
    assert (charges(running, order_id), refunds(running, order_id)) == (1, 1)
    assert stock == STOCK - QUANTITY  # still held: the human decides
    assert len(messages) == 1
    (message,) = messages
    assert message["failed_compensation"] == "ReleaseInventory"
    assert message["error"]["Error"] == "TransientError"
    assert message["compensation_error"]["Error"] == "RaiseException"
    assert message["execution_id"].endswith(f":order-{order_id}")
