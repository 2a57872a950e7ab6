"""What every saga task handler shares: observability, the health check, error names.

A saga handler is one line (``handler = saga_task_handler(step)``); each step's logic lives in
its own module under ``logic/saga/``. Exceptions leave the handler with their class name as the
Lambda ``errorType``, which is what the state machine's Retry and Catch match on (errors.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga import config
from orders_saga.errors import OutOfStock, PaymentDeclined
from orders_saga.logic.health_check import SettingReader, health_report, is_health_check
from orders_saga.logic.saga.step import StepFunction
from orders_saga.observability import bind_order, logger, metrics, trace_calls_to, tracer

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


# Traced calls (observability.trace_calls_to): the database steps make none beyond
# PostgreSQL; the payment steps call the provider and Secrets Manager.
DATABASE_CALLS: tuple[str, ...] = ()
PAYMENT_CALLS = ("httplib", "botocore")


def saga_task_handler(
    step: StepFunction,
    *,
    settings: Sequence[SettingReader] = (),
    calls: Sequence[str] = DATABASE_CALLS,
) -> Handler:
    """``settings``: configuration the step reads beyond the database, checked by the
    health-check branch. ``calls``: the libraries it calls through, traced (X-Ray)."""
    trace_calls_to(calls)
    health_settings: tuple[SettingReader, ...] = (config.database_settings, *settings)

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # F12: the pre-traffic hook's dry run of a new version: configuration only, no
        # database, no provider (logic/health_check.py).
        if is_health_check(event):
            return health_report(step.__name__, health_settings)
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
