"""``orders-ops`` with no flags against the session's local stack, through the resource map
``make serve`` publishes (issue 13): the operator's commands as the README prints them, with
real results (an order's execution and rows, messages moved and counted)."""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack import resource_map
from ops.cli import main
from tests.localstack import Running, new_key
from tests.ops.conftest import CliResult

ORDER = {
    "items": [{"sku": "SKU-APPLE", "quantity": 2}],
    "payment_method": "pm_card_visa",
    "currency": "EUR",
}


class OrdersOps:
    """``orders-ops`` as typed at a prompt: arguments only, the map where serve wrote it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, *argv: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err, local_map=self.path)
        return CliResult(code, out.getvalue(), err.getvalue())

    def json(self, *argv: str) -> dict[str, Any]:
        result = self("--json", *argv)
        assert result.code == 0, (argv, result.out, result.err)
        assert "using the local stack" in result.err
        report: dict[str, Any] = result.json()
        return report


@pytest.fixture
def orders_ops(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OrdersOps]:
    """The stack's map published as `make serve` does, and an operator's shell (no endpoint
    variables: the suite's AWS_ENDPOINT_URL points at another moto server)."""
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    path = tmp_path / "resources.json"
    with resource_map.published(path, running.stack.resource_map(), lambda _: None):
        yield OrdersOps(path)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.1)


def test_saga_show_without_flags_reads_execution_records_and_rows(
    running: Running, orders_ops: OrdersOps
) -> None:
    """Fails if: the map misses the state machine, the idempotency table's own DynamoDB
    endpoint or the database DSN (saga show would print less, not fail)."""
    status, accepted = running.api.post_order(running.alice, ORDER, new_key())
    assert status == 202, accepted
    order_id = accepted["order_id"]
    assert running.api.wait_terminal(running.alice, order_id)["status"] == "CONFIRMED"

    shown = orders_ops.json("saga", "show", order_id)

    assert shown["execution"]["status"] == "SUCCEEDED"
    assert [r["step"] for r in shown["idempotency_records"]] == ["start_saga"]
    assert shown["database_checked"] is True
    assert shown["database"]["order"]["status"] == "CONFIRMED"
    assert shown["database"]["payment"]["status"] == "CHARGED"


def test_dlq_redrive_without_max_moves_every_dlq_message_back_to_the_orders_queue(
    running: Running, orders_ops: OrdersOps
) -> None:
    """Given poison messages the Intake rejected to the DLQ, when the operator pauses the
    intake and runs `orders-ops dlq redrive orders-dlq` (no --max, no flags), then every
    message of the DLQ is moved back, counted, and waits in the orders queue; resumed, the
    Intake rejects them again, with their reason.

    Fails if: the local stack stops serving StartMessageMoveTask (devstack/sqs_move_tasks.py),
    or orders-ops stops finding the DLQ, the intake function or the endpoint in the map.
    """
    stack, resources = running.stack, running.stack.resources
    assert resources is not None
    dlq_url, orders_url = resources.orders_dlq_url, resources.orders_queue_url
    assert dlq_url is not None
    assert orders_url is not None
    poller = stack.poller
    assert poller is not None
    marker = uuid.uuid4().hex
    poison = 3

    def ours(queue_url: str) -> int:
        return sum(marker in m["Body"] for m in stack.queue_messages(queue_url))

    # Given poison messages in the DLQ, with the Intake's reason
    for n in range(poison):
        stack.send_raw_message(json.dumps({"schema_version": "9", "marker": marker, "n": n}))
    wait_for(lambda: ours(dlq_url) == poison, "poison messages in the DLQ")
    inspected = orders_ops.json("dlq", "inspect", "orders-dlq")
    assert inspected["url"] == dlq_url
    in_dlq = inspected["messages"]
    assert in_dlq >= poison
    assert any(r["reason"].startswith("invalid message") for r in inspected["reasons"])

    # When the intake is paused and the DLQ redriven without --max
    assert orders_ops.json("intake", "pause")["state"] == "Disabled"
    try:
        wait_for(lambda: not poller.enabled, "paused poller")
        started = orders_ops.json("dlq", "redrive", "orders-dlq")
        sqs = boto3.client(
            "sqs",
            endpoint_url=resources.endpoint_url,
            region_name=resources.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

        def task() -> dict[str, Any]:
            (latest,) = sqs.list_message_move_tasks(SourceArn=started["source_arn"])["Results"]
            return dict(latest)

        wait_for(lambda: task()["Status"] != "RUNNING", "finished move task")

        # Then every DLQ message was moved back, and waits in the orders queue
        assert started["source_queues"] == [orders_url]
        assert task()["Status"] == "COMPLETED"
        assert task()["ApproximateNumberOfMessagesMoved"] == in_dlq
        assert orders_ops.json("dlq", "inspect", "orders-dlq")["messages"] == 0
        assert ours(orders_url) == poison
        status = orders_ops.json("intake", "status")
        assert status["paused"] is True
        assert status["visible"] >= poison
    finally:
        assert orders_ops.json("intake", "resume")["state"] == "Enabled"

    # And resumed, the Intake rejects them again: back in the DLQ with their reason
    wait_for(lambda: ours(dlq_url) == poison, "poison messages back in the DLQ")
