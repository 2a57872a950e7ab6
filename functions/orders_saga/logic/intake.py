"""Turn one queue record into one saga execution, exactly once per order (F01, F02)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError
from pydantic import TypeAdapter, ValidationError

from orders_saga import config
from orders_saga.adapters import orders_repository
from orders_saga.adapters.database import database
from orders_saga.adapters.messaging import dead_letter, start_saga
from orders_saga.idempotency import idempotency_config, idempotent
from orders_saga.models import Order, OrderAccepted
from orders_saga.observability import bind_order, logger, metrics, unbind_order

_message_adapter: TypeAdapter[Any] = TypeAdapter(OrderAccepted)

start_saga_idempotency = idempotency_config(key="order_id", payload="@")


def process_record(record: SQSRecord) -> None:
    """Validate, then start the saga. A message that can never succeed goes to the DLQ at once
    with its reason (no retry loop); anything else that fails is retried by SQS (F02)."""
    unbind_order()  # the previous record's order is not this one's (F13)
    try:
        order = _message_adapter.validate_json(record.body).to_order()
    except ValidationError as error:
        _reject(record, f"invalid message: {error.errors(include_url=False)}")
        return
    bind_order(order.order_id)
    try:
        _start_once(order=order.model_dump(mode="json"))
    except IdempotencyValidationError:
        _reject(record, f"order id {order.order_id} reused with a different payload")
    except Exception:
        # SQS redelivers the record and, after maxReceiveCount, moves it to the DLQ as it is,
        # with no reason attached: this line is where each attempt's reason is kept (F02).
        logger.exception(
            "record failed; SQS will redeliver it",
            extra={
                "message_id": record.message_id,
                "receive_count": record.attributes.approximate_receive_count,
            },
        )
        raise


def _reject(record: SQSRecord, reason: str) -> None:
    logger.error(
        "message rejected to the DLQ", extra={"reason": reason, "message_id": record.message_id}
    )
    dead_letter(
        config.intake_dlq_url(), record.body, reason=reason, source_message_id=record.message_id
    )
    metrics.add_metric(name="MessagesRejected", unit="Count", value=1)


@idempotent(data_keyword_argument="order", config=start_saga_idempotency, key_prefix="start_saga")
def _start_once(order: dict[str, Any]) -> dict[str, Any]:
    parsed = Order.model_validate(order)
    # The message is the source of truth: make sure the order row exists even when the
    # message did not come through our API (another producer, a replayed DLQ message).
    database().run(lambda conn: orders_repository.insert_received_order(conn, parsed))
    started = start_saga(config.state_machine_arn(), parsed)
    logger.info("saga started", extra=started)
    return started
