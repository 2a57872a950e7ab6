"""``saga show`` and ``saga redrive``: one order's execution, records and rows side by side.

The execution is found by name (``order-<order_id>``, F01): no listing, no search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError
from orders_saga.logic.order_identity import execution_name_for, is_order_id

from ops.aws import error_code, error_message
from ops.errors import NotFound, UsageError
from ops.masking import mask_text
from ops.orders_db import OrderSnapshot
from ops.output import Report, key_values, refusal, table

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# State names from infra/saga.py (COMPENSATION_STEPS and the Escalate<Compensation> sends).
COMPENSATION_STATES: Final = frozenset({"RefundPayment", "ReleaseInventory", "MarkOrderFailed"})
ESCALATION_PREFIX: Final = "Escalate"
# The saga's business-failure end: compensations ran to completion (infra/saga.py).
ORDER_FAILED: Final = "OrderFailed"
REDRIVABLE: Final = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
# Standard workflows stop at 25,000 history events; the bound is AWS's own.
MAX_HISTORY_EVENTS: Final = 25_000
CAUSE_WIDTH: Final = 500
TASK_FAILURE_EVENTS: Final = frozenset(
    {
        "TaskFailed",
        "TaskTimedOut",
        "TaskStartFailed",
        "TaskSubmitFailed",
        "LambdaFunctionFailed",
        "LambdaFunctionTimedOut",
        "LambdaFunctionStartFailed",
        "LambdaFunctionScheduleFailed",
    }
)
EXECUTION_END_EVENTS: Final = frozenset(
    {"ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted"}
)
F08_RUNBOOK: Final = "runbooks/F08-partial-failure.md"


@dataclass
class ExecutionView:
    arn: str
    status: str
    started: datetime | None
    stopped: datetime | None
    error: str | None = None
    cause: str | None = None
    states: list[str] = field(default_factory=list)
    failed_state: str | None = None
    failed_error: str | None = None
    failed_cause: str | None = None
    redrive_status: str | None = None
    redrive_status_reason: str | None = None

    @property
    def last_state(self) -> str | None:
        return self.states[-1] if self.states else None

    @property
    def failed_in_compensation(self) -> bool:
        state = self.failed_state or ""
        return state in COMPENSATION_STATES or state.startswith(ESCALATION_PREFIX)

    def as_dict(self) -> dict[str, Any]:
        return {
            "execution_arn": self.arn,
            "status": self.status,
            "started": self.started,
            "stopped": self.stopped,
            "error": self.error,
            "cause": self.cause,
            "states_entered": self.states,
            "failed_state": self.failed_state,
            "failed_error": self.failed_error,
            "failed_cause": self.failed_cause,
            "redrive_status": self.redrive_status,
            "redrive_status_reason": self.redrive_status_reason,
        }


def check_order_id(order_id: str) -> str:
    if not is_order_id(order_id):
        raise UsageError(f"not an order id (a UUID): {order_id!r}")
    return order_id


def execution_arn(state_machine_arn: str, order_id: str) -> str:
    # arn:aws:states:<region>:<account>:stateMachine:<name>
    #   -> arn:aws:states:<region>:<account>:execution:<name>:<execution name>
    parts = state_machine_arn.split(":")
    if len(parts) != 7 or parts[5] != "stateMachine":
        raise UsageError(f"not a state machine ARN: {state_machine_arn}")
    return ":".join([*parts[:5], "execution", parts[6], execution_name_for(order_id)])


def load_execution(sfn: SFNClient, arn: str) -> ExecutionView | None:
    try:
        described = sfn.describe_execution(executionArn=arn)
    except ClientError as error:
        if error_code(error) == "ExecutionDoesNotExist":
            return None
        if error_code(error) == "StateMachineDoesNotExist":
            raise NotFound(f"state machine not found for {arn}") from error
        raise
    view = ExecutionView(
        arn=arn,
        status=described["status"],
        started=described.get("startDate"),
        stopped=described.get("stopDate"),
        error=described.get("error"),
        cause=_short(described.get("cause")),
        redrive_status=described.get("redriveStatus"),
        redrive_status_reason=described.get("redriveStatusReason"),
    )
    _read_history(sfn, view)
    return view


def _read_history(sfn: SFNClient, view: ExecutionView) -> None:
    """States entered in order, and the task failure that decided the outcome.

    The failed state is the state whose task failed last: for a compensation that failed
    and was escalated, that is the compensation, not the final Fail state. Executions that
    timed out or were aborted have no task failure: the state they were in counts.
    """
    pages = sfn.get_paginator("get_execution_history").paginate(
        executionArn=view.arn, PaginationConfig={"MaxItems": MAX_HISTORY_EVENTS}
    )
    current: str | None = None
    for page in pages:
        for event in page["events"]:
            kind = event["type"]
            details = _details(event)
            if kind.endswith("StateEntered"):
                current = str(details.get("name"))
                view.states.append(current)
            elif kind in TASK_FAILURE_EVENTS:
                view.failed_state = current
                view.failed_error = details.get("error")
                view.failed_cause = _short(details.get("cause"))
            elif kind in EXECUTION_END_EVENTS:
                view.error = view.error or details.get("error")
                view.cause = view.cause or _short(details.get("cause"))
                if view.failed_state is None and kind != "ExecutionFailed":
                    view.failed_state = current


def _details(event: Any) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


def _short(text: Any) -> str | None:
    # Causes are error messages and stack traces: they can echo payloads, so masked too.
    return None if text is None else mask_text(str(text))[:CAUSE_WIDTH]


# -- show ------------------------------------------------------------------------------------


def show(
    *,
    order_id: str,
    execution: ExecutionView | None,
    records: list[dict[str, Any]] | None,
    snapshot: OrderSnapshot | None,
    db_checked: bool,
) -> Report:
    if execution is None and snapshot is None:
        checked = "the state machine" + (" and the orders table" if db_checked else "")
        raise NotFound(
            f"unknown order {order_id}: no execution {execution_name_for(order_id)} in {checked}"
            + ("" if db_checked else " (pass --db-dsn to check the database too)")
        )
    data: dict[str, Any] = {
        "order_id": order_id,
        "execution": None if execution is None else execution.as_dict(),
        "idempotency_records": records,
        "database": None if snapshot is None else _snapshot_dict(snapshot),
        "database_checked": db_checked,
    }
    return Report(data, _show_text(order_id, execution, records, snapshot, db_checked=db_checked))


def _snapshot_dict(snapshot: OrderSnapshot) -> dict[str, Any]:
    return {
        "order": snapshot.order,
        "reservations": snapshot.reservations,
        "payment": snapshot.payment,
        "events": snapshot.events,
    }


def _show_text(
    order_id: str,
    execution: ExecutionView | None,
    records: list[dict[str, Any]] | None,
    snapshot: OrderSnapshot | None,
    *,
    db_checked: bool,
) -> str:
    lines = [f"order {order_id}", "", "execution:"]
    if execution is None:
        lines.append(f"  none named {execution_name_for(order_id)} (not started yet, or in a DLQ)")
    else:
        lines += _indent(
            key_values(
                [
                    ("status", execution.status),
                    ("started", execution.started),
                    ("stopped", execution.stopped),
                    ("states", " -> ".join(execution.states) or None),
                    ("failed state", execution.failed_state),
                    ("task error", execution.failed_error),
                    ("task cause", execution.failed_cause),
                    ("execution error", execution.error),
                    ("execution cause", execution.cause),
                ]
            )
        )
    lines += ["", "idempotency records:"]
    if records is None:
        lines.append("  not read (no idempotency table: pass --table or --stack)")
    else:
        lines.append(table(records, ["step", "status", "expires_at", "result"]))
    lines += ["", "database:"]
    if not db_checked:
        lines.append("  not read (pass --db-dsn or set ORDERS_OPS_DB_DSN)")
    elif snapshot is None:
        lines.append("  no order row")
    else:
        order = snapshot.order
        lines += _indent(
            key_values(
                [
                    ("status", order["status"]),
                    ("amount", f"{order['amount_cents']} {order['currency']}"),
                    ("failure reason", order["failure_reason"]),
                    ("updated", order["updated_at"]),
                ]
            )
        )
        lines += [
            "  reservations:",
            table(snapshot.reservations, ["sku", "quantity", "released_at"]),
        ]
        payment = [snapshot.payment] if snapshot.payment else []
        lines += [
            "  payment:",
            table(payment, ["status", "charge_id", "amount_cents", "refund_id"]),
        ]
        lines += ["  events:", table(snapshot.events, ["event_id", "event", "at", "detail"])]
    return "\n".join(lines)


def _indent(text: str) -> list[str]:
    return ["  " + line for line in text.splitlines()]


# -- redrive ---------------------------------------------------------------------------------


def redrive(
    sfn: SFNClient,
    *,
    order_id: str,
    execution: ExecutionView | None,
    snapshot_loader: Callable[[], OrderSnapshot | None] | None,
    force: bool,
) -> Report:
    """Redrive a stopped execution unless the database says it could do harm.

    Redrive reruns the execution from its unsuccessful state with the same input. The rule is
    deliberately simple: refuse whenever a human should decide, say what to do instead.
    ``--force`` stands in only for the missing database evidence; it never overrides what
    the database shows.
    """
    if execution is None:
        raise NotFound(f"unknown order {order_id}: no execution {execution_name_for(order_id)}")
    if execution.status not in REDRIVABLE:
        reason = {
            "RUNNING": "the execution is still running: its retries are not exhausted yet",
            "SUCCEEDED": "the execution succeeded: there is nothing to redrive",
        }.get(execution.status, f"the execution is {execution.status}")
        return refusal(
            reason,
            instead=f"watch it with `orders-ops saga show {order_id}`",
            order_id=order_id,
            status=execution.status,
        )
    if execution.last_state == ORDER_FAILED:
        return refusal(
            f"the execution ended in {ORDER_FAILED}: a business failure whose compensations "
            "all completed; a redrive cannot change the outcome",
            instead="the customer places a new order (a new Idempotency-Key)",
            order_id=order_id,
            status=execution.status,
        )
    if snapshot_loader is None and not force:
        return refusal(
            "no database to check: a redrive around a live charge could repeat compensations "
            "or confirm a refunded order",
            instead="pass --db-dsn (or ORDERS_OPS_DB_DSN); or --force after checking the "
            "order, payment and reservations yourself",
            order_id=order_id,
            status=execution.status,
        )
    if snapshot_loader is not None:
        refused = _database_refusal(order_id, execution, snapshot_loader())
        if refused is not None:
            return refused
    try:
        response = sfn.redrive_execution(executionArn=execution.arn)
    except ClientError as error:
        if error_code(error) == "ExecutionNotRedrivable":
            return refusal(
                f"Step Functions refused: {error_message(error)}",
                instead=f"read `orders-ops saga show {order_id}` and {F08_RUNBOOK}",
                order_id=order_id,
                status=execution.status,
            )
        raise
    data = {
        "order_id": order_id,
        "execution_arn": execution.arn,
        "previous_status": execution.status,
        "redriven_from": execution.failed_state or execution.last_state,
        "redrive_date": response.get("redriveDate"),
        "forced_without_database": snapshot_loader is None,
    }
    text = key_values(
        [
            ("redriven", execution.arn),
            ("from state", data["redriven_from"]),
            ("at", data["redrive_date"]),
            ("next", f"orders-ops saga show {order_id}"),
        ]
    )
    return Report(data, text)


def _database_refusal(
    order_id: str, execution: ExecutionView, snapshot: OrderSnapshot | None
) -> Report | None:
    common = {"order_id": order_id, "status": execution.status}
    if snapshot is None:
        # The intake writes the row before it starts the execution (ADR 0004).
        return refusal(
            "the execution exists but the order row does not: the database is not the one "
            "this saga writes to, or the row was removed",
            instead="check --db-dsn points at the stack's database; investigate before acting",
            **common,
        )
    if snapshot.status == "CONFIRMED":
        return refusal(
            "the order is CONFIRMED in the database: the customer has it; a redrive could "
            "only run compensations against a delivered order",
            instead=f"leave the execution failed; record the incident ({F08_RUNBOOK})",
            **common,
        )
    if snapshot.payment_status == "CHARGED" and execution.failed_in_compensation:
        charge = (snapshot.payment or {}).get("charge_id")
        return refusal(
            f"payment {charge} is CHARGED and the execution failed in the compensation "
            f"{execution.failed_state}: a redrive would repeat compensations around a live charge",
            instead=f"fix the cause ({execution.failed_error}), refund {charge} with the payment "
            f"provider using Idempotency-Key {order_id}:refund, then settle the order by hand "
            f"per {F08_RUNBOOK}",
            **common,
        )
    return None
