"""What every saga task handler shares: observability, context registration, error names.

A saga handler is one line (``handler = saga_task_handler(step)``); the step logic lives in
``logic/saga_steps.py``. Exceptions leave the handler with their class name as the Lambda
``errorType``, which is what the state machine's Retry and Catch match on (errors.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga import config
from orders_saga.errors import OutOfStock, PaymentDeclined
from orders_saga.logic.health_check import SettingReader, health_report, is_health_check
from orders_saga.logic.saga_steps import StepFunction, step_idempotency
from orders_saga.observability import bind_order, logger, metrics, tracer

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

# How often a step re-checks an idempotency record held by a crashed attempt, and how much
# of its own time it keeps to finish the step once the record has expired.
IN_PROGRESS_POLL_S = 0.5
IN_PROGRESS_MARGIN_S = 3.0


def saga_task_handler(step: StepFunction, *, settings: Sequence[SettingReader] = ()) -> Handler:
    """``settings``: configuration the step reads beyond the database and idempotency table,
    checked by the health-check branch."""
    health_settings: tuple[SettingReader, ...] = (
        config.idempotency_table,
        config.database_settings,
        *settings,
    )

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # F12: the pre-traffic hook's dry run of a new version: configuration only, no
        # database, no provider, no idempotency record (logic/health_check.py).
        if is_health_check(event):
            return health_report(step.__name__, health_settings)
        # In-progress records expire with this invocation, so a crashed attempt does not
        # block the retry for the whole TTL (F01).
        step_idempotency.register_lambda_context(context)
        order_id = str(event.get("order", {}).get("order_id", ""))
        if order_id:
            bind_order(order_id)
        logger.append_keys(step=step.__name__)
        try:
            result = _run_outlasting_a_crashed_attempt(step, event, context)
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


def _run_outlasting_a_crashed_attempt(
    step: StepFunction, event: dict[str, Any], context: LambdaContext
) -> dict[str, Any]:
    """Run the step; if an earlier attempt still holds its idempotency record, wait it out.

    F01/F09: when an attempt crashes or times out after its side effect, its record stays
    IN_PROGRESS until that invocation's deadline (at most the function timeout). The saga's
    jittered retries (a few seconds) would all hit it and the order would be compensated
    although nothing is wrong. So this attempt polls until the record expires, bounded by its
    own remaining time; then the step runs again and its side effects replay (idempotency
    keys), and if time runs out the error goes back to Step Functions, which retries.
    """
    while True:
        try:
            return step(state=event)
        except IdempotencyAlreadyInProgressError:
            remaining_s = context.get_remaining_time_in_millis() / 1000
            if remaining_s <= IN_PROGRESS_POLL_S + IN_PROGRESS_MARGIN_S:
                raise
            logger.info("an earlier attempt holds this step; waiting for it to expire")
            time.sleep(IN_PROGRESS_POLL_S)
