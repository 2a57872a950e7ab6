"""What every saga task handler shares: observability, context registration, error names.

A saga handler is one line (``handler = saga_task_handler(step)``); the step logic lives in
``logic/saga_steps.py``. Exceptions leave the handler with their class name as the Lambda
``errorType``, which is what the state machine's Retry and Catch match on (errors.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga.errors import OutOfStock, PaymentDeclined
from orders_saga.logic.saga_steps import StepFunction, step_idempotency
from orders_saga.observability import bind_order, logger, metrics, tracer

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def saga_task_handler(step: StepFunction) -> Handler:
    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # In-progress records expire with this invocation, so a crashed attempt does not
        # block the retry for the whole TTL (F01).
        step_idempotency.register_lambda_context(context)
        order_id = str(event.get("order", {}).get("order_id", ""))
        if order_id:
            bind_order(order_id)
        logger.append_keys(step=step.__name__)
        try:
            result = step(state=event)
        except (OutOfStock, PaymentDeclined) as outcome:
            logger.info(
                "business outcome ends the order", extra={"outcome": type(outcome).__name__}
            )
            raise
        except Exception:
            logger.exception("saga step failed")
            raise
        logger.info("saga step done")
        return result

    return handler
