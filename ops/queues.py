"""SQS helpers shared by ``dlq`` and ``intake``: attributes, a non-destructive peek, ARNs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from ops.aws import error_code
from ops.errors import NotFound

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

NONEXISTENT_QUEUE_CODES: Final = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
)
SQS_BATCH_MAX: Final = 10


def queue_attributes(
    sqs: SQSClient, url: str, names: Sequence[QueueAttributeNameType]
) -> dict[str, str]:
    try:
        response = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))
    except ClientError as error:
        if error_code(error) in NONEXISTENT_QUEUE_CODES:
            raise NotFound(f"queue not found: {url}") from error
        raise
    return {str(name): value for name, value in response.get("Attributes", {}).items()}


def queue_url_from_arn(sqs: SQSClient, arn: str) -> str:
    # arn:aws:sqs:<region>:<account>:<name>
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise NotFound(f"not an SQS queue ARN: {arn}")
    try:
        return sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
    except ClientError as error:
        if error_code(error) in NONEXISTENT_QUEUE_CODES:
            raise NotFound(f"queue not found: {arn}") from error
        raise


def peek(
    sqs: SQSClient, url: str, *, limit: int, visibility_s: int, wait_s: int = 1
) -> list[dict[str, Any]]:
    """Receive up to ``limit`` messages and make them visible again; never delete.

    The visibility timeout only has to outlast the scan, so one message is not read twice;
    at the end every message is released at once (visibility 0). Holding messages invisible
    would lower the visible count an alarm such as F08-needs-attention-not-empty watches.
    Each receive still counts toward a queue's ``maxReceiveCount``: callers peek only where
    that cannot move a message (a DLQ without its own redrive policy) or say so.
    """
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < limit:
            batch = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(SQS_BATCH_MAX, limit - len(seen)),
                VisibilityTimeout=visibility_s,
                # Long polling asks every SQS server: short polling can miss messages.
                WaitTimeSeconds=wait_s,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            ).get("Messages", [])
            fresh = [m for m in batch if m.get("MessageId", "") not in seen]
            if not fresh:
                break
            for message in fresh:
                seen[message.get("MessageId", "")] = dict(message)
    finally:
        release(sqs, url, [m["ReceiptHandle"] for m in seen.values() if "ReceiptHandle" in m])
    return list(seen.values())


def release(sqs: SQSClient, url: str, receipt_handles: Sequence[str]) -> None:
    for start in range(0, len(receipt_handles), SQS_BATCH_MAX):
        chunk = receipt_handles[start : start + SQS_BATCH_MAX]
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(chunk)
            ],
        )
