"""F11 Bad or oversized input: refused where it enters, with a reason, and nothing changes.

At the API (the local API Gateway built from the template, then the Api function) and on the
orders queue (the real Intake behind the local event source mapping), through the session's
full local stack. "Nothing changes" is counted in the systems of record: order rows in
PostgreSQL, executions in Step Functions, charges at the provider, records the queue handed
the Intake for that order.

The bounds are read from where they are declared, not repeated here: the request model
(orders_saga.models, from which the gateway's model is generated), the Api's body limit
(orders_saga.handlers.api.MAX_BODY_BYTES; the gateway's own 10 MB limit is proven in
tests/devstack/test_gateway.py) and SQS's message size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from orders_saga.handlers.api import MAX_BODY_BYTES
from orders_saga.logic.order_identity import order_id_for
from orders_saga.models import MAX_LINES, MAX_QUANTITY, PaymentMethod, Sku
from pydantic import TypeAdapter, ValidationError

from tests.catalogue.test_f02_poison_messages import (
    dlq_messages,
    send,
    side_effects,
    watching_the_intake,
)
from tests.localstack import Running, new_key

# SQS counts the body and every attribute's name, type and value against 256 KiB.
SQS_MAX_MESSAGE_BYTES = 256 * 1024
CUSTOMER = "f11-bad-input@example.com"


def longest_accepted(annotated: Any, char: str, prefix: str = "") -> int:
    """The longest value of ``prefix + char * n`` the model accepts (its max length)."""
    adapter: TypeAdapter[str] = TypeAdapter(annotated)
    longest = 0
    for n in range(1, 256):
        try:
            adapter.validate_python(prefix + char * n)
        except ValidationError:
            continue
        longest = len(prefix) + n
    assert longest, "the model accepts no value of this shape"
    return longest


MAX_SKU = longest_accepted(Sku, "A")
MAX_PAYMENT_METHOD = longest_accepted(PaymentMethod, "a", prefix="pm_")


def order(lines: int = 1, **override: Any) -> dict[str, Any]:
    """A valid order of ``lines`` lines (stocked SKUs), with fields replaced by ``override``."""
    skus = ("SKU-APPLE", "SKU-PEAR")
    body: dict[str, Any] = {
        "items": [{"sku": skus[i % 2], "quantity": 1} for i in range(lines)],
        "payment_method": "pm_card_visa",
        "currency": "EUR",
    }
    return {**body, **override}


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON padded with insignificant whitespace to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


# --------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Request:
    name: str
    body: bytes
    status: int
    refused_by: str  # "gateway" (the request model) or "function" (the Api's own checks)
    content_type: str = "application/json"


LARGEST_ACCEPTED = padded(order(MAX_LINES), MAX_BODY_BYTES)

BAD_REQUESTS = [
    Request("malformed json", b'{"items": [{"sku": "SKU-APPLE", ', 400, "gateway"),
    Request(
        "wrong type: quantity as a string",
        json.dumps(order(items=[{"sku": "SKU-APPLE", "quantity": "1"}])).encode(),
        400,
        "gateway",
    ),
    Request(
        "wrong type: items as an object",
        json.dumps(order(items={"sku": "SKU-APPLE", "quantity": 1})).encode(),
        400,
        "gateway",
    ),
    Request(
        "missing field",
        json.dumps({k: v for k, v in order().items() if k != "currency"}).encode(),
        400,
        "gateway",
    ),
    Request(
        "sku longer than the model allows",
        json.dumps(order(items=[{"sku": "A" * (MAX_SKU + 1), "quantity": 1}])).encode(),
        400,
        "gateway",
    ),
    Request(
        "payment method longer than the model allows",
        json.dumps(order(payment_method="pm_" + "a" * (MAX_PAYMENT_METHOD - 2))).encode(),
        400,
        "gateway",
    ),
    Request(
        "quantity above the maximum",
        json.dumps(order(items=[{"sku": "SKU-APPLE", "quantity": MAX_QUANTITY + 1}])).encode(),
        400,
        "gateway",
    ),
    Request(
        "one line more than allowed", json.dumps(order(MAX_LINES + 1)).encode(), 400, "gateway"
    ),
    Request(
        "unknown schema version",
        json.dumps(order(schema_version="3")).encode(),
        400,
        "gateway",
    ),
    Request(
        "one byte above the declared body limit",
        LARGEST_ACCEPTED + b" ",
        413,
        "function",
    ),
    # API Gateway validates only the content types its model is declared for: the function's
    # own pydantic check must answer the rest (never trust the caller).
    Request(
        "wrong types under another content type",
        json.dumps(order(items=[{"sku": "SKU-APPLE", "quantity": "1"}])).encode(),
        400,
        "function",
        content_type="text/plain",
    ),
]


@pytest.fixture(scope="module")
def token(local_stack: Running) -> str:
    """A customer of this module alone, so its orders are countable."""
    return local_stack.stack.customer_token(CUSTOMER)


def post(
    running: Running, token: str, body: bytes, key: str, content_type: str = "application/json"
) -> tuple[int, dict[str, Any]]:
    response = running.api.http.request(
        "POST",
        f"{running.api.base_url}/orders",
        body=body,
        headers={"Authorization": token, "Idempotency-Key": key, "Content-Type": content_type},
    )
    return response.status, json.loads(response.data or b"{}")


def api_invocations(running: Running) -> int:
    resources = running.stack.resources
    assert resources is not None
    pool = running.stack.pools[resources.function("api").logical_id]
    return sum(worker.invocations for worker in pool.workers)


def totals(running: Running) -> tuple[int, int, int]:
    """(order rows, executions, charges) across the whole stack."""
    with running.stack.db() as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    assert row is not None
    return int(row[0]), len(running.stack.executions()), len(running.stack.provider.ledger.charges)


@pytest.mark.parametrize("request_", BAD_REQUESTS, ids=[r.name for r in BAD_REQUESTS])
def test_f11_a_bad_request_gets_a_4xx_with_a_reason_and_changes_nothing(
    running: Running, token: str, request_: Request
) -> None:
    """Given a request that breaks the API's contract (malformed JSON, wrong types, a missing
    field, a field or a line count over the model's bounds, an unknown schema version, a body
    one byte over the Api's declared limit, or wrong types under a content type the gateway's
    model does not cover), when it is POSTed through the gateway, then it gets the 4xx with a
    message and a reason, from the gateway (the function is not invoked) or from the function's
    own checks, and nothing changes: no order row, no execution, no charge, no queue record.

    Fails if: the gateway model stops being generated from the pydantic model (api_schema.py)
    or loses `additionalProperties: false`/a bound, the request validator is removed from the
    POST method, the Api stops checking MAX_BODY_BYTES before parsing or stops validating the
    body itself, or an error response loses its reason.
    """
    key = new_key()
    order_id = order_id_for(running.customer_id(token), key)
    before, invoked = totals(running), api_invocations(running)

    with watching_the_intake(running.stack) as intake:
        status, body = post(running, token, request_.body, key, request_.content_type)

    assert status == request_.status, body
    assert body.get("message")
    assert body.get("reason"), body
    assert api_invocations(running) - invoked == (request_.refused_by == "function")
    assert totals(running) == before
    assert side_effects(running, order_id) == (0, 0, 0)
    assert intake.delivered(order_id) == 0


def test_f11_the_largest_accepted_request_goes_through(running: Running, token: str) -> None:
    """Given a body of exactly the Api's declared limit with the most lines the model allows,
    when it is POSTed, then it is accepted and becomes one order row, one queue record, one
    execution and one charge: the bounds refuse only what is over them (and this test's
    counters see an order when there is one).

    Fails if: MAX_BODY_BYTES or MAX_LINES is enforced off by one, or the gateway model and
    the pydantic model disagree on the boundary.
    """
    key = new_key()
    order_id = order_id_for(running.customer_id(token), key)
    assert len(LARGEST_ACCEPTED) == MAX_BODY_BYTES

    with watching_the_intake(running.stack) as intake:
        status, body = post(running, token, LARGEST_ACCEPTED, key)
        final = running.api.wait_terminal(token, order_id)

    assert (status, body.get("order_id")) == (202, order_id)
    assert final["status"] == "CONFIRMED"
    assert len(final["items"]) == MAX_LINES
    assert side_effects(running, order_id) == (1, 1, 1)
    assert intake.delivered(order_id) == 1


# --------------------------------------------------------------------------- the queue


def message(customer_id: str, **override: Any) -> dict[str, Any]:
    """A valid OrderAccepted v2 message, with fields replaced by ``override``."""
    body: dict[str, Any] = {
        "schema_version": "2",
        "order_id": "0b6f3a52-1c9e-4e8e-a0a3-2f0b6f1d7c44",
        "customer_id": customer_id,
        "items": [{"sku": "SKU-APPLE", "quantity": 1}],
        "payment_method": "pm_card_visa",
        "currency": "EUR",
        "accepted_at": "2026-01-01T00:00:00+00:00",
    }
    return {**body, **override}


def near_the_size_limit(customer_id: str) -> str:
    """A well-formed order padded (in its customer id) to 1 KiB under SQS's 256 KiB."""
    target = SQS_MAX_MESSAGE_BYTES - 1024
    base = json.dumps(message(""))
    return json.dumps(message("C" * (target - len(base.encode()))))


QUEUE_CASES: dict[str, Callable[[str], str]] = {
    "malformed json": lambda c: '{"schema_version": "2", "order_id": ',
    "not json": lambda c: "this is not an order",
    "wrong types": lambda c: json.dumps(message(c, items=[{"sku": "SKU-APPLE", "quantity": "1"}])),
    "missing field": lambda c: json.dumps(
        {k: v for k, v in message(c).items() if k != "payment_method"}
    ),
    "unknown schema version": lambda c: json.dumps(message(c, schema_version="3")),
    "order id that is not a uuid": lambda c: json.dumps(message(c, order_id="order-1")),
    "near SQS's 256 KB limit": near_the_size_limit,
}


def sqs_size(received: dict[str, Any]) -> int:
    """What SQS counts against its limit: the body plus each attribute's name, type, value."""
    size = len(received["Body"].encode())
    for name, value in received.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(value["DataType"].encode())
        size += len(value.get("StringValue", "").encode())
    return size


@pytest.mark.parametrize("case", list(QUEUE_CASES))
def test_f11_a_bad_message_goes_to_the_dlq_with_a_reason_and_starts_nothing(
    running: Running, case: str
) -> None:
    """Given a message on the orders queue that no version of the contract accepts (malformed
    JSON, wrong types, a missing field, an unknown schema version, an order id PostgreSQL
    cannot store, or a body near SQS's size limit that would carry a 250 KB customer id into a
    Step Functions input), when the Intake receives it, then it is parked in the DLQ at the
    first delivery with a `failure_reason`, the parked copy still fits SQS's limit, and
    nothing started: no order row, no execution, no charge.

    Fails if: a message model accepts unbounded identities again (the uuid and the near-limit
    cases would enter the retry loop or start an execution), the intake retries validation
    failures, or dead_letter() adds attributes that push a near-limit message over 256 KiB
    (SendMessage would be refused in AWS and the record would loop until SQS's redrive).
    """
    body = QUEUE_CASES[case](running.customer_id(running.alice))
    before = totals(running)

    with watching_the_intake(running.stack) as intake:
        message_id = send(running.stack, body)

    parked = [
        m
        for m in dlq_messages(running.stack)
        if m.get("MessageAttributes", {}).get("source_message_id", {}).get("StringValue")
        == message_id
    ]
    assert intake.receive_counts(message_id) == [1]
    assert len(parked) == 1
    assert parked[0]["Body"] == body
    assert parked[0]["MessageAttributes"]["failure_reason"]["StringValue"].startswith(
        "invalid message"
    )
    assert sqs_size(parked[0]) <= SQS_MAX_MESSAGE_BYTES
    assert totals(running) == before
