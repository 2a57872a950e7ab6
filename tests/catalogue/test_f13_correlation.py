"""F13 Observability gaps: one order's trail, from the API to its last saga step, is joined by
one correlation id, the order id.

Contain: ``bind_order`` (functions/orders_saga/observability.py) called by the Api when it
derives the order id, by the Intake per record, by every saga step from its input; the
``correlation_id`` message attribute on the OrderAccepted message
(adapters/messaging.py); the execution name ``order-<id>`` and its input.

Through the session's local stack (``running``): ``running.logs`` holds every line every
function printed (the local CloudWatch Logs). A *structured log line* is one Powertools
Logger wrote inside a handler: JSON with ``level``, ``message`` and ``function_request_id``.
(The EMF metric blobs on the same stream carry no order: they are metrics, not log lines.)
An order's *invocations* are those with at least one line carrying its id; every structured
line of such an invocation must carry exactly that id.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.localstack import Running, new_key

CONFIRMED_PATH = {"api", "intake", "reserve_inventory", "take_payment", "confirm_order"}
COMPENSATED_PATH = {
    "api",
    "intake",
    "reserve_inventory",
    "take_payment",
    "refund_payment",
    "release_inventory",
    "mark_order_failed",
}


@dataclass(frozen=True)
class Line:
    function: str  # the handler module's last part: "api", "take_payment", ...
    request_id: str
    correlation_id: str | None
    message: str
    fields: dict[str, Any]


@dataclass
class Trail:
    """The functions' structured log lines printed since the trail was opened."""

    running: Running

    def __post_init__(self) -> None:
        resources = self.running.stack.resources
        assert resources is not None
        self._names = {
            fn.name: fn.config.handler.rsplit(".", 2)[-2] for fn in resources.functions.values()
        }
        self._mark = len(self.running.logs.records)

    def lines(self) -> list[Line]:
        found = []
        for record in self.running.logs.records[self._mark :]:
            try:
                fields = json.loads(record.line)
            except ValueError:
                continue  # platform lines (START, REPORT) and anything not JSON
            if not isinstance(fields, dict) or "level" not in fields:
                continue  # EMF metric blobs
            if "function_request_id" not in fields:
                continue  # not printed inside a handler invocation
            found.append(
                Line(
                    function=self._names[record.function_name],
                    request_id=str(fields["function_request_id"]),
                    correlation_id=fields.get("correlation_id"),
                    message=str(fields.get("message")),
                    fields=fields,
                )
            )
        return found

    def of_order(self, order_id: str) -> list[Line]:
        """Every structured line of every invocation that logged this order at least once."""
        lines = self.lines()
        invocations = {(x.function, x.request_id) for x in lines if x.correlation_id == order_id}
        return [x for x in lines if (x.function, x.request_id) in invocations]

    def wait_for(self, order_id: str, function: str, message: str, timeout_s: float = 30) -> None:
        """Log lines travel through a pipe and a reader thread: wait until this one arrived."""
        deadline = time.monotonic() + timeout_s
        while not any(
            x.function == function and x.message == message for x in self.of_order(order_id)
        ):
            assert time.monotonic() < deadline, f"no {function} line {message!r} for {order_id}"
            time.sleep(0.05)


@pytest.fixture
def trail(running: Running) -> Trail:
    # Nothing else in flight: an Intake batch then holds only this test's records.
    assert running.stack.wait_until_settled(timeout_s=60)
    return Trail(running)


def order(sku: str = "SKU-PEAR", payment_method: str = "pm_card_visa") -> dict[str, Any]:
    return {
        "items": [{"sku": sku, "quantity": 1}],
        "payment_method": payment_method,
        "currency": "EUR",
    }


def assert_one_trail(trail: Trail, order_id: str, expected_functions: set[str]) -> None:
    lines = trail.of_order(order_id)
    assert {x.function for x in lines} == expected_functions
    unmarked = [
        (x.function, x.message, x.correlation_id) for x in lines if x.correlation_id != order_id
    ]
    assert unmarked == [], "a line of the order's invocations lacks its id"
    assert all(x.fields.get("order_id") == order_id for x in lines)


def test_f13_a_confirmed_order_is_one_trail_from_the_api_to_its_last_step(
    running: Running, trail: Trail
) -> None:
    """Given an order placed through the API, when it is confirmed, then every function it
    passed (Api, Intake, ReserveInventory, TakePayment, ConfirmOrder) logged it, and every
    structured line of those invocations carries the order id as its correlation id.

    Fails if: a handler stops calling bind_order (its lines lose the id), the Api binds the
    id late (after logging), or the saga's step input stops carrying the order.
    """
    # Given / When
    status, accepted = running.api.post_order(running.alice, order(), new_key())
    order_id = accepted["order_id"]
    final = running.api.wait_terminal(running.alice, order_id)
    trail.wait_for(order_id, "confirm_order", "saga step done")

    # Then
    assert (status, final["status"]) == (202, "CONFIRMED")
    assert_one_trail(trail, order_id, CONFIRMED_PATH)


def test_f13_a_compensated_order_is_one_trail_through_every_compensation(
    running: Running, trail: Trail
) -> None:
    """Given an order whose payment is declined, when the saga compensates it, then the
    trail also covers RefundPayment, ReleaseInventory and MarkOrderFailed, every line with
    the order id.

    Fails if: a compensation stops binding the order id from its clean input
    (``{"order", "error"}``), or the compensation chain skips a step.
    """
    status, accepted = running.api.post_order(
        running.bob, order(payment_method="pm_card_declined"), new_key()
    )
    order_id = accepted["order_id"]
    final = running.api.wait_terminal(running.bob, order_id)
    trail.wait_for(order_id, "mark_order_failed", "saga step done")

    assert (status, final["status"]) == (202, "FAILED")
    assert_one_trail(trail, order_id, COMPENSATED_PATH)


# -- the id outside the logs -----------------------------------------------------------------


@dataclass
class HeldIntake:
    """The Intake's event source mapping switched off in moto (the poller follows it), so a
    test can look at messages before the Intake takes them."""

    running: Running

    def _switch(self, enabled: bool) -> None:
        aws, resources = self.running.stack.aws, self.running.stack.resources
        poller = self.running.stack.poller
        assert aws is not None
        assert resources is not None
        assert poller is not None
        (mapping_uuid,) = resources.event_source_mappings.values()
        aws.client("lambda").update_event_source_mapping(UUID=mapping_uuid, Enabled=enabled)
        deadline = time.monotonic() + 10
        while poller.enabled != enabled or (not enabled and poller.in_flight):
            assert time.monotonic() < deadline, "the poller did not follow the mapping"
            time.sleep(0.05)

    def messages(self) -> list[dict[str, Any]]:
        resources = self.running.stack.resources
        assert resources is not None
        return self.running.stack.queue_messages(resources.orders_queue_url)


@pytest.fixture
def held_intake(running: Running) -> Iterator[HeldIntake]:
    held = HeldIntake(running)
    held._switch(False)
    try:
        yield held
    finally:
        held._switch(True)


def test_f13_the_order_id_travels_on_the_message_and_names_the_execution(
    running: Running, held_intake: HeldIntake
) -> None:
    """Given an order placed while the intake is held, then its queue message carries the
    order id as the ``correlation_id`` attribute (and in the body); when the intake takes
    it, the saga execution is named ``order-<id>`` and its input carries the same id.

    Fails if: publish_order_accepted drops the correlation_id attribute, or start_saga
    stops naming the execution after the order (execution_name_for) or changes its input.
    """
    # Given
    _, accepted = running.api.post_order(running.alice, order(), new_key())
    order_id = accepted["order_id"]

    # Then the message carries the id
    (message,) = [
        m for m in held_intake.messages() if json.loads(m["Body"]).get("order_id") == order_id
    ]
    assert message["MessageAttributes"]["correlation_id"]["StringValue"] == order_id

    # When the intake takes it
    held_intake._switch(True)
    running.api.wait_terminal(running.alice, order_id)

    # Then the execution is named after the order and its input carries it
    aws = running.stack.aws
    assert aws is not None
    (execution,) = [e for e in running.stack.executions() if order_id in e["name"]]
    assert execution["name"] == f"order-{order_id}"
    described = aws.client("stepfunctions").describe_execution(
        executionArn=execution["executionArn"]
    )
    assert json.loads(described["input"])["order"]["order_id"] == order_id


def accepted_message(order_id: str, customer_id: str) -> str:
    return json.dumps(
        {
            "schema_version": "2",
            "order_id": order_id,
            "customer_id": customer_id,
            "items": [{"sku": "SKU-PEAR", "quantity": 1}],
            "payment_method": "pm_card_visa",
            "currency": "EUR",
            "accepted_at": "2026-01-01T00:00:00Z",
        }
    )


def test_f13_a_batch_never_lends_one_orders_id_to_another_record(
    running: Running, held_intake: HeldIntake, trail: Trail
) -> None:
    """Given one Intake batch holding an order, a malformed message and another order (held
    on the queue, then taken in one receive), when the Intake processes it, then each
    order's lines carry its own id and the rejection of the malformed message carries none:
    an operator searching one order's trail never finds another record's rejection in it.

    Fails if: the Intake stops clearing the previous record's correlation id before the next
    record (logic/intake.py process_record), so the rejection is logged under the order
    processed just before it.
    """
    customer = running.customer_id(running.alice)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    poison = '{"schema_version": "2", "order_id": "not-an-order", "items": []}'
    aws, resources = running.stack.aws, running.stack.resources
    assert aws is not None
    assert resources is not None
    aws.client("sqs").send_message_batch(
        QueueUrl=resources.orders_queue_url,
        Entries=[
            {"Id": "0", "MessageBody": accepted_message(first, customer)},
            {"Id": "1", "MessageBody": poison},
            {"Id": "2", "MessageBody": accepted_message(second, customer)},
        ],
    )
    assert len(held_intake.messages()) == 3

    # When one Intake invocation takes all three
    held_intake._switch(True)
    running.api.wait_terminal(running.alice, first)
    running.api.wait_terminal(running.alice, second)
    trail.wait_for(first, "intake", "saga started")
    trail.wait_for(second, "intake", "saga started")
    rejections = wait_for_lines(
        trail, lambda x: x.function == "intake" and x.message == "message rejected to the DLQ"
    )

    # Then
    (rejection,) = rejections
    intake_invocations = {x.request_id for x in trail.lines() if x.function == "intake"}
    assert len(intake_invocations) == 1, "the three records were not one batch"
    assert rejection.correlation_id is None
    assert "order_id" not in rejection.fields
    started = [x for x in trail.lines() if x.function == "intake" and x.message == "saga started"]
    assert sorted((x.fields["order_id"], x.correlation_id) for x in started) == sorted(
        [(first, first), (second, second)]
    )


def wait_for_lines(
    trail: Trail, predicate: Callable[[Line], bool], timeout_s: float = 30
) -> list[Line]:
    deadline = time.monotonic() + timeout_s
    while not (found := [x for x in trail.lines() if predicate(x)]):
        assert time.monotonic() < deadline, "the expected log line never arrived"
        time.sleep(0.05)
    return found
