"""F01 Duplicate delivery: SQS redelivers, clients retry POSTs, Step Functions retries a task
whose first attempt committed. Each ends as one order row, one reservation (stock taken once),
one charge at the provider and one execution.

Everything runs through the session's full local stack (``running``): the real API Gateway
emulation, the Api and Intake functions in their worker processes, the SQS mapping, the
synthesized state machine and the real step handlers against PostgreSQL and the fake provider.
Single-delivery cases already proven in tests/e2e/test_order_saga.py are not repeated here.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from devstack.lambda_runtime import FunctionWorker
from tests.catalogue.full_stack import (
    Client,
    accepted_message,
    at_once,
    available,
    charges,
    count,
    events,
    executions_for,
    fresh_sku,
    log_lines,
    order_body,
    reservations,
    send_copies,
    two_environments,
    wait_execution,
    wait_terminal,
)
from tests.localstack import Running

DELIVERIES = [2, 3, 4, 5]  # the at-once case takes every count; the slower ones the ends
STOCK = 50
QUANTITY = 2


def assert_one_of_everything(running: Running, order_id: str, sku: str) -> None:
    """One order row, one reservation, stock taken once, one charge, one execution."""
    with running.stack.db() as conn:
        assert wait_terminal(conn, [order_id]) == {order_id: "CONFIRMED"}
        assert count(conn, "SELECT count(*) FROM orders WHERE order_id = %s", order_id) == 1
        assert reservations(conn, order_id) == 1
        assert available(conn, sku) == STOCK - QUANTITY
        history = events(conn, order_id)
        assert (history["RECEIVED"], history["RESERVED"], history["PAID"]) == (1, 1, 1)
        assert history["CONFIRMED"] == 1
        assert count(conn, "SELECT count(*) FROM payments WHERE order_id = %s", order_id) == 1
    assert charges(running, order_id) == 1
    assert len(executions_for(running, order_id)) == 1


def intake_outcomes(running: Running, order_id: str) -> tuple[int, int]:
    """(sagas the Intake started, deliveries it answered with the stored result) for the order."""
    started = log_lines(running, message="saga started", order_id=order_id, function="Intake")
    replayed = log_lines(
        running,
        message="duplicate suppressed; returning the stored result",
        order_id=order_id,
        function="Intake",
    )
    return len(started), len(replayed)


@pytest.mark.parametrize("deliveries", DELIVERIES)
def test_f01_the_same_message_delivered_at_once_starts_one_saga(
    running: Running, deliveries: int
) -> None:
    """Given one OrderAccepted message, when it is put on the queue `deliveries` times in one
    call (the copies arrive together, in one batch or in parallel batches of the mapping's two
    pollers), then the Intake starts one saga and answers every other copy from its idempotency
    record, and the order ends with one row, one reservation, one charge and one execution.

    Fails if: the Intake's `_start_once` loses `@idempotent` or its key stops being the order id
    (each copy would insert/start: a second execution is refused by its name, but the copies
    are no longer counted as suppressed), or the execution name stops being `order-<id>`.
    """
    stack = running.stack
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=STOCK)
    order_id = str(uuid.uuid4())
    message = accepted_message(order_id, running.customer_id(running.alice), (sku, QUANTITY))

    send_copies(stack, message, deliveries)
    assert_one_of_everything(running, order_id, sku)
    assert stack.wait_until_settled(timeout_s=60)

    assert intake_outcomes(running, order_id) == (1, deliveries - 1)


@pytest.mark.parametrize("deliveries", [2, 5])
def test_f01_the_same_message_redelivered_after_the_order_completed_changes_nothing(
    running: Running, deliveries: int
) -> None:
    """Given an order whose saga already confirmed from its first delivery, when the same
    message is delivered `deliveries - 1` more times, one after another, then nothing new
    happens: the Intake replays its stored result each time, no execution, reservation or charge
    is added.

    Fails if: the Intake's idempotency record is not persisted as COMPLETED (or expires within
    the test), or a redelivery re-runs the saga (a second execution name would be refused by
    Step Functions, which the Intake treats as started: the suppressed count catches it).
    """
    stack = running.stack
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=STOCK)
    order_id = str(uuid.uuid4())
    message = accepted_message(order_id, running.customer_id(running.bob), (sku, QUANTITY))
    send_copies(stack, message, 1)
    with stack.db() as conn:
        wait_terminal(conn, [order_id])

    for _ in range(deliveries - 1):
        assert stack.wait_until_settled(timeout_s=60)
        send_copies(stack, message, 1)
    assert stack.wait_until_settled(timeout_s=60)

    assert_one_of_everything(running, order_id, sku)
    assert intake_outcomes(running, order_id) == (1, deliveries - 1)


@pytest.mark.parametrize("deliveries", [2, 5])
def test_f01_the_same_post_sent_at_once_accepts_one_order(
    running: Running, deliveries: int
) -> None:
    """Given one client request, when it is sent `deliveries` times at once with the same
    Idempotency-Key (a client retrying on a timeout while the first is still in flight), then
    every copy is answered 202 with the same order (an overlapping copy gets 409 + Retry-After
    and its retry gets the stored answer), the Api accepts the order once and the order ends with
    one row, one reservation, one charge and one execution.

    Fails if: the Api's `_accept_once` loses `@idempotent`, its key stops including the
    Idempotency-Key, or the order id stops being derived from (customer, key) (a second order).
    """
    stack = running.stack
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=STOCK)
    client = Client(running, size=deliveries)
    key = f"f01-{uuid.uuid4().hex}"
    body = order_body((sku, QUANTITY))

    answers: list[Any] = at_once(
        [lambda: client.post(running.alice, body, key) for _ in range(deliveries)]
    )
    retried = 0
    for index, (_status, _) in enumerate(answers):
        while answers[index][0] == 409 and retried < 10 * deliveries:  # Retry-After: 1
            time.sleep(1)
            retried += 1
            answers[index] = client.post(running.alice, body, key)

    assert {status for status, _ in answers} == {202}, answers
    assert len({json.dumps(answer, sort_keys=True) for _, answer in answers}) == 1
    order_id = answers[0][1]["order_id"]
    assert_one_of_everything(running, order_id, sku)
    assert len(log_lines(running, message="order accepted", order_id=order_id)) == 1


STEPS = ("reserve_inventory", "take_payment", "confirm_order")
# Where each step's result lands in the state (docs/architecture.md) and so what the next
# step's input holds.
RESULT_KEYS = {"reserve_inventory": "reservation", "take_payment": "payment"}


def step_inputs(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The exact input each forward step got in the execution, rebuilt from its output."""
    inputs: dict[str, dict[str, Any]] = {}
    state: dict[str, Any] = {"order": output["order"]}
    for step in STEPS:
        inputs[step] = dict(state)
        if step in RESULT_KEYS:
            state[RESULT_KEYS[step]] = output[RESULT_KEYS[step]]
    return inputs


@pytest.mark.parametrize("where", ["same environment", "two environments"])
def test_f01_a_step_retried_after_its_first_attempt_committed_does_it_once(
    running: Running, where: str
) -> None:
    """Given an order the saga confirmed, when each forward step's real handler is invoked
    again with its exact input (what Step Functions sends when it retries a task whose first
    attempt committed but whose response was lost): twice in the same environment or once in
    each of two environments, then every retry returns the first attempt's result and nothing
    is done again: one reservation, stock taken once, one charge, one confirmation. The steps
    keep no idempotency record (ADR 0012): this is their side effects' own idempotency.

    Fails if: a step's database write stops being idempotent (repo.reserve_inventory's
    existing-reservation check, record_charge's ON CONFLICT, confirm_order's status guard),
    take_payment stops sending the order's Idempotency-Key to the provider (it would charge
    twice), or record_charge logs a second PAID event when it replays.
    """
    stack = running.stack
    resources, aws = stack.resources, stack.aws
    assert resources is not None
    assert aws is not None
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=STOCK)
    _, accepted = running.api.post_order(
        running.alice, order_body((sku, QUANTITY)), f"f01-{uuid.uuid4().hex}"
    )
    order_id = accepted["order_id"]
    assert_one_of_everything(running, order_id, sku)
    # The order row is CONFIRMED before the execution has ended: its output exists only then.
    execution = wait_execution(running, order_id)
    assert execution["status"] == "SUCCEEDED", execution
    sfn = aws.client("stepfunctions")
    output = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["output"])

    results: dict[str, list[Any]] = {}
    for step, payload in step_inputs(output).items():
        first, second = two_environments(stack, step)
        envs: tuple[FunctionWorker, ...] = (
            (first, first) if where == "same environment" else (first, second)
        )
        results[step] = []
        for env in envs:
            result = env.invoke(payload)
            assert not result.errored, result.payload
            results[step].append(result.json())

    assert_one_of_everything(running, order_id, sku)
    assert results["reserve_inventory"] == [output["reservation"]] * 2
    assert results["take_payment"] == [output["payment"]] * 2
    assert results["confirm_order"] == [output["confirmation"]] * 2
