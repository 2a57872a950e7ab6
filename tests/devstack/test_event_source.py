"""The SQS event source mapping: partial batches, poison records, real event shape (F02)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.event_source import SqsEventSourcePoller, local_retry_visibility
from devstack.lambda_runtime import InvokeResult
from tests.devstack.mini_stack import RunningStack, running_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with running_stack() as running:
        yield running


@pytest.fixture
def clean_queues(stack: RunningStack) -> RunningStack:
    # PurgeQueue is rate limited (once a minute, as in SQS): delete what is there instead.
    sqs = stack.aws.client("sqs")
    for url in stack.resources.queue_urls.values():
        while batch := sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", []):
            for message in batch:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return stack


class RecordingInvoker:
    """An in-process function: decides per record, counts every delivery."""

    def __init__(self, decide: Callable[[dict[str, Any]], Any]) -> None:
        self.decide = decide
        self.events: list[dict[str, Any]] = []
        self.deliveries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult:
        with self._lock:
            self.events.append(event)
            for record in event["Records"]:
                self.deliveries[json.loads(record["body"])["id"]] += 1
        outcome = self.decide(event)
        if isinstance(outcome, InvokeResult):
            return outcome
        return InvokeResult(json.dumps(outcome), errored=False)


def _poller(stack: RunningStack, invoker: Any) -> SqsEventSourcePoller:
    res = stack.resources
    (mapping,) = stack.aws.template.event_source_mappings()
    return SqsEventSourcePoller.from_template(
        mapping,
        queue_visibility_s=stack.aws.template.queue("OrdersQueue").visibility_timeout_s,
        endpoint_url=res.endpoint_url,
        region=res.region,
        queue_url=res.queue_urls["OrdersQueue"],
        queue_arn=res.queue_arns["OrdersQueue"],
        invoker=invoker,
        invoked_function_arn=res.functions["Intake"].alias_arn,
        say=stack.messages.append,
    )


def _send(stack: RunningStack, *ids: str, **extra: Any) -> None:
    sqs = stack.aws.client("sqs")
    for ident in ids:
        sqs.send_message(
            QueueUrl=stack.resources.queue_urls["OrdersQueue"],
            MessageBody=json.dumps({"id": ident, **extra}),
            MessageAttributes={"schema": {"DataType": "String", "StringValue": "2"}},
        )


def _visible_and_hidden(stack: RunningStack, queue: str) -> int:
    attrs = stack.aws.client("sqs").get_queue_attributes(
        QueueUrl=stack.resources.queue_urls[queue],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def _poison_fails(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["messageId"]}
            for r in event["Records"]
            if json.loads(r["body"]).get("id", "").startswith("poison")
        ]
    }


def test_partial_batch_failure_deletes_only_the_succeeded_records(
    clean_queues: RunningStack,
) -> None:
    # Given a batch with three good records and one poison record
    stack = clean_queues
    _send(stack, "good-1", "poison-1", "good-2", "good-3")
    poller = _poller(stack, RecordingInvoker(_poison_fails))
    messages = poller._receive(10, 1)
    assert len(messages) == 4
    # When the function reports the poison record as failed
    poller._process(messages)
    # Then only the poison record is still in the queue
    left = stack.aws.client("sqs").receive_message(
        QueueUrl=stack.resources.queue_urls["OrdersQueue"],
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,  # leave it for the next test's clean-up
    )["Messages"]
    assert [json.loads(m["Body"])["id"] for m in left] == ["poison-1"]
    assert (poller.stats.records_succeeded, poller.stats.records_failed) == (3, 1)


def test_a_function_error_deletes_no_record(clean_queues: RunningStack) -> None:
    stack = clean_queues
    _send(stack, "a", "b")
    crash = InvokeResult(json.dumps({"errorType": "Sandbox.Timedout"}), errored=True)
    poller = _poller(stack, RecordingInvoker(lambda event: crash))
    poller._process(poller._receive(10, 1))
    assert _visible_and_hidden(stack, "OrdersQueue") == 2
    assert poller.stats.function_errors == 1


@pytest.mark.parametrize(
    "response",
    [{"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, {"batchItemFailures": [{}]}],
)
def test_an_invalid_batch_response_fails_the_whole_batch(
    clean_queues: RunningStack, response: dict[str, Any]
) -> None:
    stack = clean_queues
    _send(stack, "a", "b")
    poller = _poller(stack, RecordingInvoker(lambda event: response))
    poller._process(poller._receive(10, 1))
    assert _visible_and_hidden(stack, "OrdersQueue") == 2


def test_poison_record_reaches_the_dlq_after_max_receive_count_and_good_ones_run_once(
    clean_queues: RunningStack,
) -> None:
    # Given good records and one poison record, and the template's maxReceiveCount of 3
    stack = clean_queues
    good = [f"good-{i}" for i in range(12)]
    _send(stack, *good[:6], "poison-1", *good[6:])
    invoker = RecordingInvoker(_poison_fails)
    # When the mapping polls until the queue is empty
    with _poller(stack, invoker) as poller:
        assert poller.drain(timeout=30)
    # Then every good record was processed exactly once and the poison one three times
    assert all(invoker.deliveries[g] == 1 for g in good)
    assert invoker.deliveries["poison-1"] == 3
    dlq = stack.aws.client("sqs").receive_message(
        QueueUrl=stack.resources.queue_urls["OrdersDlq"],
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,
    )["Messages"]
    assert [json.loads(m["Body"])["id"] for m in dlq] == ["poison-1"]
    # and no batch exceeded the template's BatchSize of 5
    assert max(len(e["Records"]) for e in invoker.events) <= 5


def test_records_have_the_real_sqs_event_shape(clean_queues: RunningStack) -> None:
    stack = clean_queues
    _send(stack, "shape")
    invoker = RecordingInvoker(lambda event: None)
    poller = _poller(stack, invoker)
    poller._process(poller._receive(10, 1))
    (record,) = invoker.events[0]["Records"]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.resources.queue_arns["OrdersQueue"]
    assert record["awsRegion"] == "eu-west-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["schema"] == {
        "stringValue": "2",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["receiptHandle"]
    assert record["md5OfBody"]


def test_the_retry_visibility_is_scaled_in_one_place_and_announced(
    clean_queues: RunningStack,
) -> None:
    assert local_retry_visibility(180, 0.01) == 2
    assert local_retry_visibility(30, 0.01) == 0
    with _poller(clean_queues, RecordingInvoker(lambda e: None)):
        pass
    assert any("scaled" in m and "OrdersQueue" in m for m in clean_queues.messages)


def test_a_disabled_mapping_leaves_messages_in_the_queue(clean_queues: RunningStack) -> None:
    stack = clean_queues
    invoker = RecordingInvoker(lambda e: None)
    poller = _poller(stack, invoker)
    poller.set_enabled(False)
    with poller:
        _send(stack, "paused")
        assert not poller.drain(timeout=1.5)
        assert not invoker.events
        poller.set_enabled(True)
        assert poller.drain(timeout=10)
    assert invoker.deliveries["paused"] == 1


def test_end_to_end_the_intake_worker_starts_one_execution_per_good_record(
    clean_queues: RunningStack,
) -> None:
    # Given the real Intake worker behind the mapping
    stack = clean_queues
    intake = stack.pools["Intake"]
    sqs = stack.aws.client("sqs")
    url = stack.resources.queue_urls["OrdersQueue"]
    for order_id in ("e2e-1", "e2e-2", "e2e-3"):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"order_id": order_id}))
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"poison": True}))
    # When the queue drains
    with _poller(stack, intake) as poller:
        assert poller.drain(timeout=30)
    # Then each good order has its saga execution, and the poison record is in the DLQ
    sfn = stack.aws.client("stepfunctions")
    names = {
        e["name"]
        for e in sfn.list_executions(stateMachineArn=stack.resources.state_machine_arn)[
            "executions"
        ]
    }
    assert {"order-e2e-1", "order-e2e-2", "order-e2e-3"} <= names
    assert _visible_and_hidden(stack, "OrdersDlq") == 1
