"""The local stack's SQS message move tasks (devstack/sqs_move_tasks.py): moto 5.2.5 lacks
them, so ``orders-ops dlq redrive`` without ``--max`` had nothing to call locally. Each test
runs them on the suite's moto server with the orders queue and its DLQ as the template
shapes them (tests/fixtures.py ``aws``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devstack.sqs_move_tasks import MoveTasks, served
from tests.fixtures import AwsResources


@pytest.fixture
def move_tasks(aws: AwsResources) -> Iterator[MoveTasks]:
    with served(lambda: boto3.client("sqs")) as tasks:
        assert tasks is not None, "moto implements move tasks now: drop devstack/sqs_move_tasks"
        yield tasks


def arn(url: str) -> str:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn"]
    )["Attributes"]
    return attributes["QueueArn"]


def dead_letter(aws: AwsResources, count: int) -> None:
    """``count`` messages in the DLQ, as the Intake rejects them (with a failure reason)."""
    sqs = boto3.client("sqs")
    for n in range(count):
        sqs.send_message(
            QueueUrl=aws.intake_dlq_url,
            MessageBody=f'{{"n": {n}}}',
            MessageAttributes={"failure_reason": {"DataType": "String", "StringValue": "bad"}},
        )


def finished(source_arn: str, timeout_s: float = 20) -> dict[str, Any]:
    sqs = boto3.client("sqs")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (latest,) = sqs.list_message_move_tasks(SourceArn=source_arn)["Results"]
        if latest["Status"] != "RUNNING":
            return dict(latest)
        time.sleep(0.05)
    raise AssertionError(f"move task of {source_arn} still running after {timeout_s} s")


def test_a_task_without_destination_moves_every_message_back_to_the_source_queue(
    aws: AwsResources, move_tasks: MoveTasks
) -> None:
    """Fails if: messages are lost or duplicated on the way, lose their attributes (the
    failure reason), or the task does not report what it moved."""
    dead_letter(aws, 12)
    dlq_arn = arn(aws.intake_dlq_url)

    handle = boto3.client("sqs").start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]

    task = finished(dlq_arn)
    assert handle
    assert task["Status"] == "COMPLETED"
    assert (
        task["ApproximateNumberOfMessagesMoved"],
        task["ApproximateNumberOfMessagesToMove"],
    ) == (
        12,
        12,
    )
    assert "TaskHandle" not in task  # AWS names the handle of running tasks only
    moved = aws.sqs_messages(aws.orders_queue_url)
    assert sorted(m["Body"] for m in moved) == sorted(f'{{"n": {n}}}' for n in range(12))
    assert {m["MessageAttributes"]["failure_reason"]["StringValue"] for m in moved} == {"bad"}
    assert aws.sqs_messages(aws.intake_dlq_url) == []


def test_only_a_dead_letter_queue_can_be_a_source_and_one_task_runs_per_source(
    aws: AwsResources, move_tasks: MoveTasks
) -> None:
    """Fails if: a live queue can be drained by a move task, or two tasks race on one DLQ."""
    sqs = boto3.client("sqs")
    dead_letter(aws, 3)
    dlq_arn = arn(aws.intake_dlq_url)

    with pytest.raises(ClientError, match="must be configured as a Dead Letter Queue"):
        sqs.start_message_move_task(SourceArn=arn(aws.orders_queue_url))
    sqs.start_message_move_task(SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=1)
    with pytest.raises(ClientError, match="Only one active task"):
        sqs.start_message_move_task(SourceArn=dlq_arn)


def test_a_cancelled_task_stops_at_its_rate_and_leaves_the_rest_in_the_dlq(
    aws: AwsResources, move_tasks: MoveTasks
) -> None:
    """Fails if: --rate is not honoured, or a cancel moves (or loses) the rest."""
    sqs = boto3.client("sqs")
    dead_letter(aws, 5)
    dlq_arn = arn(aws.intake_dlq_url)
    handle = sqs.start_message_move_task(SourceArn=dlq_arn, MaxNumberOfMessagesPerSecond=2)[
        "TaskHandle"
    ]
    time.sleep(0.8)  # two messages at 2/s: the first at once, the second after 0.5 s

    moved = sqs.cancel_message_move_task(TaskHandle=handle)["ApproximateNumberOfMessagesMoved"]

    task = finished(dlq_arn)
    assert task["Status"] == "CANCELLED"
    assert moved == task["ApproximateNumberOfMessagesMoved"] == 2
    assert task["MaxNumberOfMessagesPerSecond"] == 2
    assert len(aws.sqs_messages(aws.orders_queue_url)) == 2
    assert len(aws.sqs_messages(aws.intake_dlq_url)) == 3


def test_moto_is_left_as_it_was_when_the_local_stack_stops(aws: AwsResources) -> None:
    """Fails if: the patch outlives the stack (a later moto session would be served by it)."""
    sqs = boto3.client("sqs", config=Config(retries={"max_attempts": 1}))
    with served(lambda: boto3.client("sqs")):
        assert sqs.list_message_move_tasks(SourceArn=arn(aws.intake_dlq_url))["Results"] == []

    with pytest.raises(ClientError, match="500"):
        sqs.list_message_move_tasks(SourceArn=arn(aws.intake_dlq_url))
