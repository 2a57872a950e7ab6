"""``dlq inspect`` / ``dlq redrive`` against the moto server (F02, F08).

StartMessageMoveTask is not in moto 5.2.5: those tests answer that one call from a botocore
Stubber (``stub_call``) and assert the exact parameters; everything else runs on moto.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import boto3
import pytest

from tests.fixtures import AwsResources
from tests.ops.conftest import Cli, stub_call

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjdXN0b21lci0xIn0.c2lnbmF0dXJl"
ORDER_ID = "3f1c2a9e-7b4d-4c55-9a8e-0d6f5b2c1a77"


def _order_body(order_id: str = ORDER_ID) -> str:
    return json.dumps(
        {
            "schema_version": "2",
            "order_id": order_id,
            "customer_id": "customer-1",
            "items": [{"sku": "SKU-APPLE", "quantity": 2}],
            "payment_method": "pm_card_visa",
            "currency": "EUR",
            "token": JWT,
        }
    )


def _dead_letter(url: str, body: str, reason: str | None) -> None:
    attributes: dict[str, MessageAttributeValueTypeDef] = {}
    if reason:
        attributes["failure_reason"] = {"DataType": "String", "StringValue": reason}
    boto3.client("sqs").send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)


def _depth(url: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def _arn(url: str) -> str:
    return boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]


def test_F02_inspect_groups_reasons_masks_secrets_and_leaves_messages(
    cli: Cli, aws: AwsResources
) -> None:
    # Given two rejected messages with the same reason and one that ran out of receives
    reason = "invalid message: [{'loc': ('payment_method',), 'input': 'pm_card_visa'}]"
    _dead_letter(aws.intake_dlq_url, _order_body(), reason)
    _dead_letter(aws.intake_dlq_url, _order_body("11111111-2222-4333-8444-555555555555"), reason)
    _dead_letter(aws.intake_dlq_url, "not json Bearer abc.def.ghi", None)

    # When
    result = cli("--json", "dlq", "inspect", "orders-dlq", "--samples", "3")

    # Then: counted, grouped, masked, and every message is still there and visible
    assert result.code == 0, result.err
    report = result.json()
    assert report["messages"] == 3
    reasons = {group["reason"]: group for group in report["reasons"]}
    assert reasons["unknown"]["count"] == 1
    (masked_reason,) = [r for r in reasons if r != "unknown"]
    assert reasons[masked_reason]["count"] == 2
    assert ORDER_ID in reasons[masked_reason]["order_ids"]
    assert "pm_card_visa" not in result.out
    assert JWT not in result.out
    assert "abc.def.ghi" not in result.out
    assert len(report["samples"]) == 3
    assert _depth(aws.intake_dlq_url) == 3


def test_F08_inspect_needs_attention_groups_by_failed_compensation(
    cli: Cli, aws: AwsResources
) -> None:
    # Given a failed refund escalated by the saga
    body = {
        "order": json.loads(_order_body()),
        "error": {"Error": "TransientError", "Cause": "provider down"},
        "failed_compensation": "RefundPayment",
        "compensation_error": {"Error": "TransientError", "Cause": "timeout"},
        "execution_id": "arn:aws:states:eu-west-1:123456789012:execution:saga:x",
    }
    _dead_letter(aws.needs_attention_queue_url, json.dumps(body), None)

    # When
    result = cli("dlq", "inspect", "needs-attention")

    # Then the table names the compensation and the order to look at
    assert result.code == 0, result.err
    assert "RefundPayment" in result.out
    assert ORDER_ID in result.out
    assert "pm_card_visa" not in result.out


def test_inspect_unknown_queue_name_is_a_usage_error(cli: Cli) -> None:
    result = cli("dlq", "inspect", "orders")

    assert result.code == 2
    assert "unknown queue 'orders'" in result.err


def test_inspect_missing_queue_url_exits_2_naming_it(cli: Cli, aws: AwsResources) -> None:
    missing = aws.intake_dlq_url.rsplit("/", 1)[0] + "/no-such-queue"

    result = cli("--json", "dlq", "inspect", missing)

    assert result.code == 2
    assert f"queue not found: {missing}" in result.err
    assert result.json()["exit_code"] == 2


def test_F02_redrive_starts_one_move_task_back_to_the_source(
    cli: Cli, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given (Stubber: moto has no StartMessageMoveTask)
    stubber = stub_call(
        monkeypatch,
        cli.clients.sqs,
        "sqs",
        "start_message_move_task",
        {"TaskHandle": "task-handle-1"},
        {"SourceArn": _arn(aws.intake_dlq_url), "MaxNumberOfMessagesPerSecond": 5},
    )

    # When
    result = cli("--json", "dlq", "redrive", "orders-dlq", "--rate", "5")

    # Then: no DestinationArn (back to the source per the redrive policy), the handle printed
    assert result.code == 0, result.err
    stubber.assert_no_pending_responses()
    report = result.json()
    assert report["task_handle"] == "task-handle-1"
    assert report["source_queues"] == [aws.orders_queue_url]


def test_redrive_without_rate_sends_only_the_source_arn(
    cli: Cli, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubber = stub_call(
        monkeypatch,
        cli.clients.sqs,
        "sqs",
        "start_message_move_task",
        {"TaskHandle": "task-handle-2"},
        {"SourceArn": _arn(aws.intake_dlq_url)},
    )

    result = cli("dlq", "redrive", "orders-dlq")

    assert result.code == 0, result.err
    stubber.assert_no_pending_responses()
    assert "task-handle-2" in result.out


def test_F02_redrive_max_moves_at_most_n_and_keeps_attributes(cli: Cli, aws: AwsResources) -> None:
    # Given three dead-lettered messages
    for _ in range(3):
        _dead_letter(aws.intake_dlq_url, _order_body(), "invalid message: test")

    # When only two are sent back (a canary)
    result = cli("--json", "dlq", "redrive", "orders-dlq", "--max", "2")

    # Then exactly two moved to the orders queue, with their attributes, and one stays
    assert result.code == 0, result.err
    assert result.json()["moved"] == 2
    assert _depth(aws.intake_dlq_url) == 1
    moved = aws.sqs_messages(aws.orders_queue_url)
    assert len(moved) == 2
    assert {m["Body"] for m in moved} == {_order_body()}
    assert all(
        m["MessageAttributes"]["failure_reason"]["StringValue"] == "invalid message: test"
        for m in moved
    )


def test_F08_redrive_needs_attention_is_refused_pointing_to_saga_redrive(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing queued on the stub: any move task would fail the test.
    stub_call(monkeypatch, cli.clients.sqs, "sqs", "start_message_move_task")

    result = cli("--json", "dlq", "redrive", "needs-attention")

    assert result.code == 1
    report = result.json()
    assert report["refused"] is True
    assert "saga redrive" in report["instead"]


def test_redrive_of_a_queue_that_is_no_dlq_is_refused(
    cli: Cli, aws: AwsResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub_call(monkeypatch, cli.clients.sqs, "sqs", "start_message_move_task")

    result = cli("dlq", "redrive", aws.orders_queue_url)

    assert result.code == 1
    assert "not the dead-letter queue of any queue" in result.out
