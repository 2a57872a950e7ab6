"""Lambda entry point for the orders queue: partial batch responses, one saga per order (F02)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga.logic.intake import process_record, start_saga_idempotency
from orders_saga.observability import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    start_saga_idempotency.register_lambda_context(context)
    return process_partial_response(  # type: ignore[return-value]
        event=event, record_handler=process_record, processor=processor, context=context
    )
