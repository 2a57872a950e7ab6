"""What a customer is told about a failed order (issue 10, finding 10).

The saga records why an order failed as ``<Error>: <Cause>`` (``SagaState.failure_reason``):
for a business outcome the cause is our own message, but for a Lambda error it is a Python
stack trace with file paths, and for a timeout or a service error whatever AWS wrote. That text
stays where operators read it (the order row, ``orders-ops saga show``, the logs and the
execution history). A customer gets a stable code and a fixed message per code, chosen from
the error's *name* only: nothing of the cause ever reaches the API.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from orders_saga.models import FailureCode, OrderRecord, OrderView

# Error names (the Lambda errorType Step Functions reports, orders_saga/errors.py) that are a
# business outcome the customer can act on. Every other error is NOT_COMPLETED.
_BUSINESS_OUTCOMES: Final = MappingProxyType(
    {
        "OutOfStock": FailureCode.OUT_OF_STOCK,
        "PaymentDeclined": FailureCode.PAYMENT_DECLINED,
    }
)
MESSAGES: Final = MappingProxyType(
    {
        FailureCode.OUT_OF_STOCK: "One or more items are out of stock. Nothing was charged.",
        FailureCode.PAYMENT_DECLINED: "The payment was declined. Nothing was charged.",
        FailureCode.NOT_COMPLETED: (
            "The order could not be completed. Any payment taken has been refunded."
        ),
    }
)


def failure_code(failure_reason: str | None) -> FailureCode | None:
    """The public code of a stored ``failure_reason`` (None when nothing failed)."""
    if failure_reason is None:
        return None
    error = failure_reason.split(":", 1)[0].strip()
    return _BUSINESS_OUTCOMES.get(error, FailureCode.NOT_COMPLETED)


def public_view(record: OrderRecord) -> OrderView:
    """The order as its customer may see it."""
    code = failure_code(record.failure_reason)
    return OrderView(
        order_id=record.order_id,
        status=record.status,
        items=record.items,
        currency=record.currency,
        amount_cents=record.amount_cents,
        failure_code=code,
        failure_message=None if code is None else MESSAGES[code],
        created_at=record.created_at,
        updated_at=record.updated_at,
    )
