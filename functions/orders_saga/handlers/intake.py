"""Lambda entry point for the orders queue: partial batch responses, one saga per order (F02)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga import config
from orders_saga.logic.health_check import health_report, is_health_check
from orders_saga.logic.intake import process_record, start_saga_idempotency
from orders_saga.observability import logger, metrics, trace_calls_to, tracer

trace_calls_to(("botocore",))  # idempotency records, StartExecution, the intake DLQ
processor = BatchProcessor(event_type=EventType.SQS)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # F12: the pre-traffic hook's dry run of a new version: configuration only, no database,
    # no queue, no execution started (logic/health_check.py).
    if is_health_check(event):
        return health_report(
            "intake",
            (
                config.idempotency_table,
                config.intake_dlq_url,
                config.state_machine_arn,
                config.database_settings,
            ),
        )
    start_saga_idempotency.register_lambda_context(context)
    return process_partial_response(  # type: ignore[return-value]
        event=event, record_handler=process_record, processor=processor, context=context
    )
