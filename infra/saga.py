"""The order saga: a Step Functions Standard state machine (catalogue F08).

Shape (see docs/architecture.md, "Flow" and "Messages and payloads")::

    ReserveInventory -> TakePayment -> ConfirmOrder -> OrderConfirmed (Succeed)
          |                  |              |
          |                  +--------------+--> RefundPayment
          +------------------------------------------------+--> ReleaseInventory
                                                              -> MarkOrderFailed
                                                              -> OrderFailed (Fail "OrderFailed")

    any compensation that still fails after its retries
          -> Escalate<Compensation> (SQS needs-attention queue) -> CompensationFailed (Fail)

Why it is built this way:
- Forward steps retry only transient errors, with full jitter and a delay cap (F03); business
  errors (OutOfStock, PaymentDeclined) are caught at once, a retry cannot change the answer.
- The compensation chain is one shared tail entered at the step that undoes the last thing
  that may have happened. A TakePayment failure enters at RefundPayment even when the error
  says "declined" or "timed out": the charge may have gone through with its response lost (F09),
  and RefundPayment finds it by the order reference. ReserveInventory failures enter at
  ReleaseInventory for the same reason (a partial reservation is released; idempotent).
- Compensations get a clean copy of the order (``{"order", "error"}``), never the state
  polluted by half-finished forward steps, and they retry on anything (they must finish).
- A compensation that still fails is never swallowed (F08, F17): the order, the original error,
  the compensation's error and its name go to the needs-attention queue, and the execution
  ends in an explicit ``Fail`` so the ExecutionsFailed alarm fires too.
- Every task has its own timeout and the execution has an overall one (F07).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.config import SAGA_STEPS, StageConfig, saga_execution_timeout

# Business step names. They are the state names in the ASL, the keys of ``steps`` and the
# logical function names in docs/architecture.md: one word for one thing everywhere.
RESERVE_INVENTORY: Final = "ReserveInventory"
TAKE_PAYMENT: Final = "TakePayment"
CONFIRM_ORDER: Final = "ConfirmOrder"
REFUND_PAYMENT: Final = "RefundPayment"
RELEASE_INVENTORY: Final = "ReleaseInventory"
MARK_ORDER_FAILED: Final = "MarkOrderFailed"

FORWARD_STEPS: Final = (RESERVE_INVENTORY, TAKE_PAYMENT, CONFIRM_ORDER)
COMPENSATION_STEPS: Final = (REFUND_PAYMENT, RELEASE_INVENTORY, MARK_ORDER_FAILED)
# infra/config.py owns the list (the timeout and attempt budgets count it); this module only
# splits it into forward steps and compensations, and refuses to drift from it.
if FORWARD_STEPS + COMPENSATION_STEPS != SAGA_STEPS:
    raise ImportError("infra/saga.py step names disagree with infra.config.SAGA_STEPS")

ORDER_CONFIRMED: Final = "OrderConfirmed"
ORDER_FAILED: Final = "OrderFailed"
COMPENSATION_FAILED: Final = "CompensationFailed"

# Where each forward step's result lands in the state (the contract in docs/architecture.md).
FORWARD_RESULT_PATHS: Final[Mapping[str, str]] = {
    RESERVE_INVENTORY: "$.reservation",
    TAKE_PAYMENT: "$.payment",
    CONFIRM_ORDER: "$.confirmation",
}
COMPENSATION_RESULT_PATHS: Final[Mapping[str, str]] = {
    REFUND_PAYMENT: "$.compensation.refund_payment",
    RELEASE_INVENTORY: "$.compensation.release_inventory",
    MARK_ORDER_FAILED: "$.compensation.mark_order_failed",
}
ERROR_PATH: Final = "$.error"
COMPENSATION_ERROR_PATH: Final = "$.compensation_error"

# Errors a retry cannot fix: caught at once, never in a Retry (F03: no pointless attempts).
BUSINESS_ERRORS: Final = ("OutOfStock", "PaymentDeclined")

# Errors worth another attempt. The function code raises TransientError for dependency
# failures (including an open circuit breaker, F19).
# The Lambda.* names are the service-side failures LambdaInvoke would otherwise retry on its
# own without jitter (hence retry_on_service_exceptions=False below, F03).
TRANSIENT_ERRORS: Final = (
    "TransientError",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.Unknown",
    "Sandbox.Timedout",
    # The environment died mid-invocation (out of memory, a crash after a side effect): the
    # step is idempotent, so running it again is safe (F01, F09).
    "Runtime.ExitError",
    "States.Timeout",
)


def saga_log_settings(config: StageConfig) -> tuple[sfn.LogLevel, bool]:
    """Execution log level and whether state data is logged, from the stage's log level.

    A debugging stage logs every transition with its data (F13). Otherwise only errors, and no
    execution data: the state carries customer and payment details that do not belong in logs.
    """
    if config.log_level == "DEBUG":
        return sfn.LogLevel.ALL, True
    return sfn.LogLevel.ERROR, False


class OrderSaga(Construct):
    """The saga state machine wired to the step functions' aliases (F08).

    ``steps`` maps every name in ``SAGA_STEPS`` to the alias Step Functions invokes (aliases,
    not functions: a CodeDeploy rollback moves the alias and the saga follows, F12).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        steps: Mapping[str, lambda_.IAlias],
        needs_attention_queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        missing = sorted(set(SAGA_STEPS) - set(steps))
        if missing:
            raise ValueError(f"OrderSaga needs an alias for every step; missing: {missing}")

        self._config = config
        self._steps = steps
        self._needs_attention_queue = needs_attention_queue

        order_failed = sfn.Fail(
            self,
            ORDER_FAILED,
            error=ORDER_FAILED,
            cause="The order was compensated; the first failure is at $.error in the history.",
        )
        self._compensation_failed = sfn.Fail(
            self,
            COMPENSATION_FAILED,
            error=COMPENSATION_FAILED,
            cause="A compensation failed after its retries; the order is in the needs-attention "
            "queue.",
        )

        # The compensation tail, built back to front so each entry point is a state.
        mark_order_failed = self._compensation(MARK_ORDER_FAILED)
        release_inventory = self._compensation(RELEASE_INVENTORY)
        refund_payment = self._compensation(REFUND_PAYMENT)
        refund_payment.next(release_inventory)
        release_inventory.next(mark_order_failed)
        mark_order_failed.next(order_failed)

        reserve_inventory = self._reserve_inventory(on_failure=release_inventory)
        take_payment = self._take_payment(on_failure=refund_payment)
        confirm_order = self._confirm_order(on_failure=refund_payment)
        definition = (
            reserve_inventory.next(take_payment)
            .next(confirm_order)
            .next(sfn.Succeed(self, ORDER_CONFIRMED))
        )

        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            retention=config.log_retention,  # F13
            removal_policy=config.removal_policy,
        )
        log_level, include_execution_data = saga_log_settings(config)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            # Worst case of every step's attempts, timeouts and backoff waits, computed and
            # explained in infra/config.py (F07): nothing runs unbounded.
            timeout=saga_execution_timeout(config),
            tracing_enabled=True,  # F13
            logs=sfn.LogOptions(
                destination=self.log_group,
                level=log_level,
                include_execution_data=include_execution_data,
            ),
        )

    # -- forward steps: one function per business step ------------------------------------

    def _reserve_inventory(self, *, on_failure: sfn.IChainable) -> tasks.LambdaInvoke:
        """OutOfStock and exhausted retries both release whatever part was reserved."""
        task = self._forward_task(RESERVE_INVENTORY)
        task.add_catch(on_failure, errors=["OutOfStock"], result_path=ERROR_PATH)
        task.add_catch(on_failure, errors=[sfn.Errors.ALL], result_path=ERROR_PATH)
        return task

    def _take_payment(self, *, on_failure: sfn.IChainable) -> tasks.LambdaInvoke:
        """Declined or exhausted: refund first; the charge may exist, its response lost (F09)."""
        task = self._forward_task(TAKE_PAYMENT)
        task.add_catch(on_failure, errors=["PaymentDeclined"], result_path=ERROR_PATH)
        task.add_catch(on_failure, errors=[sfn.Errors.ALL], result_path=ERROR_PATH)
        return task

    def _confirm_order(self, *, on_failure: sfn.IChainable) -> tasks.LambdaInvoke:
        """Nothing to undo in ConfirmOrder itself; undo the payment and the reservation."""
        task = self._forward_task(CONFIRM_ORDER)
        task.add_catch(on_failure, errors=[sfn.Errors.ALL], result_path=ERROR_PATH)
        return task

    def _forward_task(self, name: str) -> tasks.LambdaInvoke:
        task = self._invoke(
            name,
            payload=None,  # the whole state: each step reads what earlier steps stored
            result_path=FORWARD_RESULT_PATHS[name],
        )
        self._add_jittered_retry(task, errors=TRANSIENT_ERRORS)
        return task

    # -- compensations -------------------------------------------------------------------

    def _compensation(self, name: str) -> tasks.LambdaInvoke:
        """A compensation: clean input, retried on anything, escalated when it still fails."""
        task = self._invoke(
            name,
            payload=sfn.TaskInput.from_object(
                {
                    "order": sfn.JsonPath.object_at("$.order"),
                    "error": sfn.JsonPath.object_at(ERROR_PATH),
                }
            ),
            result_path=COMPENSATION_RESULT_PATHS[name],
        )
        # Compensations are idempotent (F01), so retrying on any error is safe; it is still
        # bounded and jittered (F03) so a broken dependency cannot hold the execution forever.
        self._add_jittered_retry(task, errors=(sfn.Errors.ALL,))
        task.add_catch(
            self._escalate(name),
            errors=[sfn.Errors.ALL],
            result_path=COMPENSATION_ERROR_PATH,
        )
        return task

    def _escalate(self, failed_compensation: str) -> sfn.IChainable:
        """Needs-attention message for a human (runbook F08), then an explicit Fail.

        If this send itself fails after its retries the execution fails with the SQS error,
        which the ExecutionsFailed alarm still catches: nothing ends silently (F17).
        """
        send = tasks.SqsSendMessage(
            self,
            f"Escalate{failed_compensation}",
            queue=self._needs_attention_queue,
            message_body=sfn.TaskInput.from_object(
                {
                    "order": sfn.JsonPath.object_at("$.order"),
                    "error": sfn.JsonPath.object_at(ERROR_PATH),
                    "failed_compensation": failed_compensation,
                    "compensation_error": sfn.JsonPath.object_at(COMPENSATION_ERROR_PATH),
                    "execution_id": sfn.JsonPath.execution_id,
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
            task_timeout=self._task_timeout(),
        )
        self._add_jittered_retry(send, errors=(sfn.Errors.ALL,))
        return send.next(self._compensation_failed)

    # -- shared building blocks --------------------------------------------------------------

    def _invoke(
        self, name: str, *, payload: sfn.TaskInput | None, result_path: str
    ) -> tasks.LambdaInvoke:
        return tasks.LambdaInvoke(
            self,
            name,
            lambda_function=self._steps[name],
            payload=payload,
            # Resource = the alias ARN and the result = the function's return value (the
            # shape in docs/architecture.md). Verified to execute in moto (tests/infra).
            payload_response_only=True,
            # CDK's built-in service-exception retry has no jitter and no cap (F03); the
            # Lambda.* errors are in TRANSIENT_ERRORS instead.
            retry_on_service_exceptions=False,
            result_path=result_path,
            task_timeout=self._task_timeout(),
        )

    def _task_timeout(self) -> sfn.Timeout:
        return sfn.Timeout.duration(Duration.seconds(self._config.task_timeout_s))

    def _add_jittered_retry(self, task: sfn.TaskStateBase, *, errors: tuple[str, ...]) -> None:
        retry = self._config.retry
        task.add_retry(
            errors=list(errors),
            interval=Duration.seconds(retry.interval_s),
            max_attempts=retry.max_attempts,
            backoff_rate=retry.backoff_rate,
            max_delay=Duration.seconds(retry.max_delay_s),
            # Full jitter spreads retries of many executions hitting the same outage (F03).
            jitter_strategy=sfn.JitterType.FULL,
        )
