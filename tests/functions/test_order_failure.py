"""A failed order tells its customer a stable code and a fixed message, never the cause
(issue 10, finding 10): for a Lambda error the cause is a Python stack trace with file paths."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from orders_saga.logic.order_failure import MESSAGES, failure_code, public_view
from orders_saga.models import FailureCode, OrderLine, OrderRecord

TRACEBACK_CAUSE = (
    'Sandbox.Timedout: {"errorType":"TransientError","errorMessage":"database unavailable: '
    'connection to server at \\"10.40.3.7\\" failed","stackTrace":["  File \\"/var/task/'
    'orders_saga/adapters/database.py\\", line 142, in run\\n"]}'
)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ('OutOfStock: {"errorMessage":"not enough stock for SKU-1 (wanted 2)"}', "out_of_stock"),
        ('PaymentDeclined: {"errorMessage":"card declined"}', "payment_declined"),
        (TRACEBACK_CAUSE, "not_completed"),
        ("States.Timeout: Task timed out after 15.00 seconds", "not_completed"),
        ("TransientError: payment provider unavailable", "not_completed"),
        ("unknown", "not_completed"),
        ("", "not_completed"),
    ],
)
def test_every_stored_reason_maps_to_a_stable_code(reason: str, code: str) -> None:
    assert failure_code(reason) == FailureCode(code)


def test_an_order_that_did_not_fail_has_no_failure() -> None:
    assert failure_code(None) is None


def test_the_public_view_carries_no_part_of_the_cause() -> None:
    """Fails if: public_view copies failure_reason (or any of it) into the response."""
    now = datetime.now(UTC)
    record = OrderRecord(
        order_id="3f2a6d4e-0000-5000-8000-000000000001",
        status="FAILED",
        items=[OrderLine(sku="SKU-1", quantity=1)],
        currency="EUR",
        amount_cents=None,
        failure_reason=TRACEBACK_CAUSE,
        created_at=now,
        updated_at=now,
    )

    body = public_view(record).model_dump_json()

    assert '"failure_code":"not_completed"' in body
    assert MESSAGES[FailureCode.NOT_COMPLETED] in body
    for fragment in ("Sandbox", "stackTrace", "/var/task", "10.40.3.7", "failure_reason"):
        assert fragment not in body


def test_every_code_has_a_message_without_internal_words() -> None:
    assert set(MESSAGES) == set(FailureCode)
    for message in MESSAGES.values():
        assert message.endswith(".")
        assert not any(word in message for word in ("Error", "Lambda", "Exception", "{"))
