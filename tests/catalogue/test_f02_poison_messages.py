"""F02 Poison message: one bad record never makes its batch fail forever.

Through the session's full local stack (``running``): the real Intake worker behind the local
SQS event source mapping (batch size, window, partial batch responses from the template), the
queue's redrive policy on moto, the synthesized state machine, PostgreSQL and the provider.

Each test puts good records and one poison record in ONE batch: the mapping is paused with
the ops switch (the mapping's State, as ``orders-ops intake pause`` does), the polling threads
are seen parked on it, the records are sent, and the first delivery is one receive of the
mapping's own poll code; the mapping is then resumed and redelivers whatever failed.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytest
from orders_saga.models import Order, OrderAcceptedV2, OrderLine
from psycopg import sql

from devstack.event_source import SqsEventSourcePoller
from devstack.lambda_runtime import Invoker, InvokeResult
from devstack.stack import LocalStack
from tests.localstack import Running

GOOD_PER_BATCH = 4


# --------------------------------------------------------------------------- the mapping


class RecordingIntake:
    """Stands between the mapping and the real Intake pool: records every batch it is handed
    (message id, ApproximateReceiveCount, body) and passes it on unchanged."""

    def __init__(self, inner: Invoker) -> None:
        self.inner = inner
        self.batches: list[list[tuple[str, int]]] = []
        self.bodies: list[str] = []
        self._lock = threading.Lock()

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult:
        with self._lock:
            self.batches.append(
                [
                    (r["messageId"], int(r["attributes"]["ApproximateReceiveCount"]))
                    for r in event["Records"]
                ]
            )
            self.bodies.extend(r["body"] for r in event["Records"])
        return self.inner.invoke(event, invoked_function_arn=invoked_function_arn)

    def delivered(self, fragment: str) -> int:
        """Records delivered so far whose body contains ``fragment``."""
        with self._lock:
            return sum(fragment in body for body in self.bodies)

    def receive_counts(self, message_id: str) -> list[int]:
        """ApproximateReceiveCount of every delivery of one message, in order."""
        with self._lock:
            return [count for batch in self.batches for mid, count in batch if mid == message_id]

    def batch_of(self, message_id: str) -> set[str]:
        """The message ids delivered together with the first delivery of ``message_id``."""
        with self._lock:
            for batch in self.batches:
                if any(mid == message_id for mid, _ in batch):
                    return {mid for mid, _ in batch}
        return set()


def poller_of(stack: LocalStack) -> SqsEventSourcePoller:
    assert stack.poller is not None, "the local stack is not running"
    return stack.poller


def _set_mapping(stack: LocalStack, *, enabled: bool) -> None:
    """The ops switch (F19): the mapping's State in Lambda, which the local poller follows."""
    aws, resources = stack.aws, stack.resources
    assert aws is not None
    assert resources is not None
    (mapping_uuid,) = resources.event_source_mappings.values()
    aws.client("lambda").update_event_source_mapping(UUID=mapping_uuid, Enabled=enabled)
    poller = poller_of(stack)
    deadline = time.monotonic() + 30
    while poller.enabled != enabled:
        assert time.monotonic() < deadline, "the poller never followed the mapping's State"
        time.sleep(0.05)


def _parked(frame: FrameType | None) -> bool:
    """The thread blocks inside ``self._enabled.wait()`` of the poller's loop: with the
    mapping disabled it cannot receive again until the mapping is enabled."""
    chain: list[str] = []
    while frame is not None:
        chain.append(frame.f_code.co_name)
        if frame.f_code.co_name == "_run" and frame.f_code.co_filename.endswith("event_source.py"):
            # innermost first: Condition.wait (blocking) <- Event.wait <- _run
            return chain[-3:] == ["wait", "wait", "_run"]
        frame = frame.f_back
    return False


def wait_until_parked(poller: SqsEventSourcePoller, timeout_s: float = 60) -> None:
    """Every polling thread seen blocked on the (cleared) enable switch at least once; a
    thread still inside a poll begun before the switch would take our records."""
    pollers = [t for t in poller._threads if t.name != "esm-state" and t.is_alive()]
    assert pollers, "the mapping has no polling thread"
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(pollers):
        assert not poller.enabled
        assert time.monotonic() < deadline, "a polling thread never parked"
        frames = sys._current_frames()
        seen |= {t.ident for t in pollers if t.ident is not None and _parked(frames.get(t.ident))}
        time.sleep(0.01)


@contextmanager
def one_batch_through_the_intake(stack: LocalStack) -> Iterator[RecordingIntake]:
    """Pause the mapping and record what the Intake is handed; on exit, resume it.

    Inside the block, send the records and call ``deliver_first_batch``."""
    poller = poller_of(stack)
    recorder = RecordingIntake(poller.invoker)
    _set_mapping(stack, enabled=False)
    try:
        wait_until_parked(poller)
        poller.invoker = recorder
        yield recorder
    finally:
        try:
            _set_mapping(stack, enabled=True)
            # Resumed: the mapping's own threads redeliver what failed until the queue drains.
            settled = stack.wait_until_settled(timeout_s=120)
        finally:
            poller.invoker = recorder.inner
    assert settled, "the orders queue did not drain"


@contextmanager
def watching_the_intake(stack: LocalStack) -> Iterator[RecordingIntake]:
    """Record what the running mapping hands the Intake; on exit, wait for the queue to drain
    (so a message sent inside the block has been delivered) and stop recording."""
    poller = poller_of(stack)
    recorder = RecordingIntake(poller.invoker)
    poller.invoker = recorder
    try:
        yield recorder
        assert stack.wait_until_settled(timeout_s=120), "the orders queue did not drain"
    finally:
        poller.invoker = recorder.inner


def deliver_first_batch(stack: LocalStack) -> None:
    """One receive-and-invoke of the mapping's own code (batch size and window from the
    template), from this thread while the mapping's threads stay parked."""
    poller = poller_of(stack)
    messages = poller._collect()
    assert messages, "nothing to deliver"
    poller._process(messages)


def send(stack: LocalStack, body: str) -> str:
    aws, resources = stack.aws, stack.resources
    assert aws is not None
    assert resources is not None
    response = aws.client("sqs").send_message(QueueUrl=resources.orders_queue_url, MessageBody=body)
    return str(response["MessageId"])


def max_receive_count(stack: LocalStack) -> int:
    """The orders queue's RedrivePolicy.maxReceiveCount, read from the synthesized template."""
    (mapping,) = stack.template.event_source_mappings()
    redrive = stack.template.queue(mapping.queue_logical_id).redrive
    assert redrive is not None, "the orders queue must redrive to a DLQ (F02)"
    return redrive.max_receive_count


def dlq_messages(stack: LocalStack) -> list[dict[str, Any]]:
    resources = stack.resources
    assert resources is not None
    return stack.queue_messages(resources.intake_dlq_url)


# --------------------------------------------------------------------------- the orders


def good_message(customer_id: str) -> tuple[str, str]:
    """(order id, OrderAccepted v2 body) of a valid one-apple order, as the API writes it."""
    order_id = str(uuid.uuid4())
    order = Order(
        order_id=order_id,
        customer_id=customer_id,
        items=[OrderLine(sku="SKU-APPLE", quantity=1)],
        payment_method="pm_card_visa",
        currency="EUR",
    )
    return order_id, OrderAcceptedV2.for_order(order).model_dump_json()


def send_batch(stack: LocalStack, customer_id: str, poison_body: str) -> tuple[dict[str, str], str]:
    """Good records around one poison record: ({good message id: order id}, poison id)."""
    good: dict[str, str] = {}
    poison = ""
    for i in range(GOOD_PER_BATCH):
        if i == GOOD_PER_BATCH // 2:
            poison = send(stack, poison_body)
        order_id, body = good_message(customer_id)
        good[send(stack, body)] = order_id
    return good, poison


def side_effects(running: Running, order_id: str) -> tuple[int, int, int]:
    """(order rows, executions, charges at the provider) for one order id."""
    with running.stack.db() as conn:
        row = conn.execute(
            "SELECT count(*) FROM orders WHERE order_id = %s", (order_id,)
        ).fetchone()
    assert row is not None
    rows = int(row[0])
    executions = [e for e in running.stack.executions() if e["name"] == f"order-{order_id}"]
    charges = running.stack.provider.ledger.charges_for(order_id)
    return rows, len(executions), len(charges)


def assert_good_orders_ran_once(
    running: Running, intake: RecordingIntake, good: dict[str, str]
) -> None:
    """Every good record: delivered once (receive count 1), confirmed, one execution, one
    charge."""
    for message_id, order_id in good.items():
        final = running.api.wait_terminal(running.alice, order_id)
        assert intake.receive_counts(message_id) == [1], order_id
        assert final["status"] == "CONFIRMED", final
        assert side_effects(running, order_id) == (1, 1, 1)


@contextmanager
def refused_by_the_database(running: Running, order_id: str) -> Iterator[None]:
    """The orders table refuses this one order's row on every attempt (a BEFORE INSERT
    trigger): a persistent failure of exactly one record, deep in the real handler's work."""
    function = sql.Identifier(f"f02_refuse_{order_id.replace('-', '_')}")
    with running.stack.db() as conn:
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.order_id = {order}::uuid THEN"
                " RAISE EXCEPTION 'F02 injected: order % cannot be stored', NEW.order_id;"
                " END IF; RETURN NEW; END $$"
            ).format(fn=function, order=sql.Literal(order_id))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {fn} BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION {fn}()"
            ).format(fn=function)
        )
    try:
        yield
    finally:
        with running.stack.db() as conn:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {fn} ON orders").format(fn=function))
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {fn}()").format(fn=function))


# --------------------------------------------------------------------------- the proofs


def test_f02_an_invalid_record_goes_to_the_dlq_at_once_and_its_batch_completes(
    running: Running,
) -> None:
    """Given four valid orders and one malformed record (wrong types) in one batch,
    when the Intake processes the batch, then the good ones complete on their first delivery
    (receive count 1, one execution, one charge, CONFIRMED) and the malformed one is parked in
    the DLQ by the Intake itself, with a `failure_reason`, after exactly one delivery (never
    retried: validation failures never enter the retry loop), its reason logged.

    Fails if: the intake raises on a validation error instead of dead-lettering it (the record
    would be redelivered maxReceiveCount times and reach the DLQ without a reason), the
    handler drops `process_partial_response`/`ReportBatchItemFailures` (one bad record would
    fail the whole batch and redeliver the good ones), or the reason is not logged.
    """
    stack = running.stack
    customer = running.customer_id(running.alice)
    poison_body = json.dumps({"schema_version": "2", "order_id": 42, "items": "many"})

    with one_batch_through_the_intake(stack) as intake:
        good, poison = send_batch(stack, customer, poison_body)
        deliver_first_batch(stack)

    assert intake.batch_of(poison) >= {poison, *good}, "all five must arrive in one batch"
    assert intake.receive_counts(poison) == [1]
    assert_good_orders_ran_once(running, intake, good)
    (parked,) = [
        m
        for m in dlq_messages(stack)
        if m.get("MessageAttributes", {}).get("source_message_id", {}).get("StringValue") == poison
    ]
    assert parked["Body"] == poison_body
    assert parked["MessageAttributes"]["failure_reason"]["StringValue"].startswith(
        "invalid message"
    )
    logged = [
        line
        for line in running.logs.json_lines()
        if line.get("message") == "message rejected to the DLQ" and line.get("message_id") == poison
    ]
    assert len(logged) == 1
    assert "invalid message" in str(logged[0]["reason"])


def test_f02_a_record_that_keeps_failing_is_redelivered_alone_then_dead_lettered(
    running: Running,
) -> None:
    """Given four valid orders and one valid order whose processing fails on every attempt
    (PostgreSQL refuses its row) in one batch, when the mapping delivers and redelivers, then
    the good ones complete on their first delivery and run exactly once, and only the failing
    one is redelivered, maxReceiveCount times (read from the template's RedrivePolicy), after
    which SQS moves it to the DLQ (same message id); each failed attempt logged its reason.

    Fails if: the intake stops reporting partial batch failures (the good records would be
    redelivered with the poison one: receive counts above 1, or duplicate work), the handler
    swallows the error (the record would be deleted and the order silently lost, never in the
    DLQ), maxReceiveCount/the redrive policy is dropped from the queue (it would cycle forever,
    and this test would time out), or a failed attempt leaves no log line with its reason.
    """
    stack = running.stack
    customer = running.customer_id(running.alice)
    poison_order, poison_body = good_message(customer)
    receives = max_receive_count(stack)

    with (
        refused_by_the_database(running, poison_order),
        one_batch_through_the_intake(stack) as intake,
    ):
        good, poison = send_batch(stack, customer, poison_body)
        deliver_first_batch(stack)

    assert intake.batch_of(poison) >= {poison, *good}, "all five must arrive in one batch"
    assert_good_orders_ran_once(running, intake, good)
    assert intake.receive_counts(poison) == list(range(1, receives + 1))
    assert [m["Body"] for m in dlq_messages(stack) if m["MessageId"] == poison] == [poison_body]
    assert side_effects(running, poison_order) == (0, 0, 0)
    failures = [
        line
        for line in running.logs.json_lines()
        if line.get("message") == "record failed; SQS will redeliver it"
        and line.get("message_id") == poison
    ]
    assert [int(line["receive_count"]) for line in failures] == list(range(1, receives + 1))
    assert all("F02 injected" in str(line.get("exception")) for line in failures)
    assert all(line.get("order_id") == poison_order for line in failures)


@pytest.fixture(autouse=True)
def _settled(running: Running) -> None:
    """Start from a drained queue: another test's leftovers would share the batch."""
    assert running.stack.wait_until_settled(timeout_s=120)
