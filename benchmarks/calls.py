"""AWS calls, state transitions and invocations per order, happy and compensated (issue 12).

``python -m benchmarks.calls [--orders 10]``

Runs the local stack with the call recorder on (``devstack/call_recorder.py``: every API call
each function makes, as IAM sees it), sends one warm-up order of each kind, then ``--orders``
happy orders and as many whose payment is declined (compensated: the stock is released, the
order marked failed), one at a time, and counts per order:

- the functions' AWS calls by IAM action (what Lambda would bill us for on the other side:
  DynamoDB writes, SQS sends, StartExecution). The local stack logs the functions into
  PostgreSQL with a secret where AWS signs an IAM token (``docs/aws-fidelity.md``), and a
  secret is read once per environment: both are left out and reported apart;
- billed state transitions per execution, from each execution's history: every state entered,
  plus every retry of a task;
- Lambda invocations per function (the saga's from the history; one Api and one Intake
  invocation per order, as the run sends orders one at a time).

The figures feed the cost model (``benchmarks/cost.py``) as ``order_profile``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from devstack import demo
from devstack.call_recorder import RecordedCall, read_recordings
from devstack.lambda_runtime import discard_logs
from devstack.payment_provider import DECLINED_PAYMENT_METHOD
from devstack.stack import LocalStack
from infra.functions import HANDLERS

# Goals of issue 12: the floor for three tasks and a Succeed state, and the measured floor of
# calls for an order that is accepted, queued and started exactly once.
GOAL_TRANSITIONS: Final = 4
GOAL_CALLS: Final = 6
# Not per-order API calls in AWS: the IAM token is a local signature, and the local stack's
# database login secret stands in for it (read once per environment, cached).
NOT_PER_ORDER: Final = frozenset({"rds-db:connect", "secretsmanager:GetSecretValue"})
KINDS: Final = {
    "happy": demo.order_body(("SKU-APPLE", 1)),
    "compensated": demo.order_body(("SKU-COFFEE", 1), payment_method=DECLINED_PAYMENT_METHOD),
}
EXPECTED_STATUS: Final = {"happy": "CONFIRMED", "compensated": "FAILED"}


@dataclass(frozen=True)
class OrderKind:
    orders: int
    calls: dict[str, float]  # "<function> <iam action>" -> per order
    calls_by_action: dict[str, float]  # iam action -> per order
    transitions: float  # billed state transitions per execution
    invocations: dict[str, float]  # function -> per order
    left_out: dict[str, int]  # NOT_PER_ORDER actions seen in the measured window

    @property
    def total_calls(self) -> float:
        return sum(self.calls_by_action.values())


@dataclass(frozen=True)
class CallsPerOrder:
    kinds: dict[str, OrderKind]

    def as_json(self) -> dict[str, Any]:
        return {
            "goal_transitions": GOAL_TRANSITIONS,
            "goal_calls": GOAL_CALLS,
            "kinds": {
                name: {**asdict(kind), "total_calls": kind.total_calls}
                for name, kind in self.kinds.items()
            },
        }

    def lines(self) -> list[str]:
        out: list[str] = []
        for name, kind in self.kinds.items():
            goals = ""
            if name == "happy":
                goals = (
                    f" (goals: <= {GOAL_CALLS} calls: "
                    f"{'met' if kind.total_calls <= GOAL_CALLS else 'MISSED'}; "
                    f"{GOAL_TRANSITIONS} transitions: "
                    f"{'met' if kind.transitions <= GOAL_TRANSITIONS else 'MISSED'})"
                )
            out.append(
                f"{name} order ({kind.orders} measured): {kind.total_calls:g} AWS calls, "
                f"{kind.transitions:g} state transitions{goals}"
            )
            for call, per_order in sorted(kind.calls.items()):
                out.append(f"  {per_order:5g}  {call}")
            invoked = ", ".join(f"{f} {n:g}" for f, n in kind.invocations.items())
            out.append(f"  invocations per order: {invoked}")
            if kind.left_out:
                out.append(f"  not per order (local stand-ins, cached): {kind.left_out}")
        return out


def logical_name(physical: str) -> str:
    """``<stack>-ApiFunctionAB12...`` -> ``Api``."""
    for name in sorted(HANDLERS, key=len, reverse=True):
        if f"{name}Function" in physical:
            return name
    return physical


def _recorded(base: Path) -> Counter[tuple[str, str]]:
    """(function, IAM action) -> calls so far (one file per worker: counted, not ordered)."""
    calls: Iterable[RecordedCall] = (c for r in read_recordings(base) for c in r.calls)
    return Counter((logical_name(c.function), c.action) for c in calls)


def billed_transitions(events: Iterable[Mapping[str, Any]]) -> int:
    """Step Functions Standard bills each state entered and each retry of a task."""
    kinds = Counter(str(e["type"]) for e in events)
    entered = sum(n for kind, n in kinds.items() if kind.endswith("StateEntered"))
    scheduled = kinds["LambdaFunctionScheduled"] + kinds["TaskScheduled"]
    retries = max(0, scheduled - kinds["TaskStateEntered"])
    return entered + retries


def _history(stack: LocalStack, execution_arn: str) -> list[dict[str, Any]]:
    assert stack.aws is not None
    sfn = stack.aws.client("stepfunctions")
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        events.extend(page["events"])
    return events


def _saga_invocations(events: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Lambda invocations per saga function, read from the tasks the history scheduled."""
    invoked: Counter[str] = Counter()
    for event in events:
        details = event.get("lambdaFunctionScheduledEventDetails") or event.get(
            "taskScheduledEventDetails"
        )
        if details is None:
            continue
        blob = json.dumps(details)
        for name in HANDLERS:
            if f"{name}Function" in blob:
                invoked[name] += 1
                break
    return invoked


def _place_one(stack: LocalStack, client: demo.Client, customer: demo.Customer, kind: str) -> str:
    status, response = client.post_order(customer, demo.key(), KINDS[kind])
    if status != 202:
        raise RuntimeError(f"{kind} order refused: {status} {response}")
    order_id = str(response["order_id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with stack.db() as conn:
            row = conn.execute(
                "SELECT status FROM orders WHERE order_id = %s", (order_id,)
            ).fetchone()
        if row is not None and row[0] == EXPECTED_STATUS[kind]:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"{kind} order {order_id} did not end {EXPECTED_STATUS[kind]}")
    if not stack.wait_until_settled(timeout_s=60):
        raise RuntimeError("the local stack did not settle")
    return order_id


def measure(orders: int = 10) -> CallsPerOrder:
    def say(message: str) -> None:
        print(f"calls: {message}", file=sys.stderr, flush=True)

    kinds: dict[str, OrderKind] = {}
    with (
        tempfile.TemporaryDirectory(prefix="calls-") as tmp,
        LocalStack(call_log_dir=Path(tmp), say=say, log_sink=discard_logs, tracing=False) as stack,
    ):
        client = demo.Client(stack.api_url)
        alice = demo.Customer("alice", stack.customer_token("alice@example.com"))
        for kind in KINDS:  # warm-up: each function's first environment builds its clients
            _place_one(stack, client, alice, kind)
        for kind in KINDS:
            before = _recorded(Path(tmp))
            order_ids = [_place_one(stack, client, alice, kind) for _ in range(orders)]
            window = _recorded(Path(tmp)) - before
            executions = {e["name"]: e["executionArn"] for e in stack.executions()}
            histories = [_history(stack, executions[f"order-{o}"]) for o in order_ids]
            per_call: Counter[str] = Counter()
            by_action: Counter[str] = Counter()
            left_out: Counter[str] = Counter()
            for (function, action), n in window.items():
                if action in NOT_PER_ORDER:
                    left_out[action] += n
                else:
                    per_call[f"{function} {action}"] += n
                    by_action[action] += n
            invocations: Counter[str] = Counter({"Api": orders, "Intake": orders})
            for events in histories:
                invocations.update(_saga_invocations(events))
            kinds[kind] = OrderKind(
                orders=orders,
                calls={k: round(n / orders, 2) for k, n in sorted(per_call.items())},
                calls_by_action={k: round(n / orders, 2) for k, n in sorted(by_action.items())},
                transitions=round(sum(billed_transitions(h) for h in histories) / orders, 2),
                invocations={k: round(n / orders, 2) for k, n in invocations.items()},
                left_out=dict(left_out),
            )
    return CallsPerOrder(kinds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.calls", description=__doc__)
    parser.add_argument("--orders", type=int, default=10, help="orders of each kind measured")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.orders)
    print(json.dumps(result.as_json(), indent=1) if args.json else "\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
