"""``dlq inspect`` and ``dlq redrive`` (catalogue F02 poison messages, F08 needs attention).

Two queues hold work a human must look at: the intake's DLQ (messages the intake rejected or
that failed ``maxReceiveCount`` times) and the needs-attention queue (compensations that
still failed). Only the first has a source queue to move messages back to.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ops.errors import UsageError
from ops.masking import mask_body, mask_text
from ops.output import Report, iso_from_epoch_ms, key_values, refusal, table
from ops.queues import SQS_BATCH_MAX, peek, queue_attributes
from ops.resources import NEEDS_ATTENTION, ORDERS_DLQ, Resources

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

ORDERS_DLQ_NAME: Final = "orders-dlq"
NEEDS_ATTENTION_NAME: Final = "needs-attention"
# Long enough to finish the scan without reading a message twice, short enough that a
# crashed run hands the messages back quickly; a normal run releases them at once.
PEEK_VISIBILITY_S: Final = 30
# The move loop's messages stay invisible while they are sent and deleted; if the tool dies
# they reappear in the DLQ after this, and nothing is lost.
MOVE_VISIBILITY_S: Final = 60
REASON_WIDTH: Final = 160
UNKNOWN_REASON: Final = "unknown"


@dataclass(frozen=True)
class QueueRef:
    label: str
    url: str
    is_needs_attention: bool


def resolve_queue(name: str, resources: Resources) -> QueueRef:
    if name == ORDERS_DLQ_NAME:
        return QueueRef(name, resources.get(ORDERS_DLQ), is_needs_attention=False)
    if name == NEEDS_ATTENTION_NAME:
        return QueueRef(name, resources.get(NEEDS_ATTENTION), is_needs_attention=True)
    if name.startswith(("https://", "http://")):
        known = resources.find(NEEDS_ATTENTION)
        return QueueRef(name, name, is_needs_attention=known is not None and known == name)
    raise UsageError(
        f"unknown queue {name!r}: use {ORDERS_DLQ_NAME}, {NEEDS_ATTENTION_NAME} or a queue URL"
    )


# -- inspect ---------------------------------------------------------------------------------


def inspect(sqs: SQSClient, queue: QueueRef, *, samples: int, scan: int) -> Report:
    attrs = queue_attributes(
        sqs,
        queue.url,
        ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "RedrivePolicy"],
    )
    visible = int(attrs.get("ApproximateNumberOfMessages", "0"))
    in_flight = int(attrs.get("ApproximateNumberOfMessagesNotVisible", "0"))
    note = None
    messages: list[dict[str, Any]] = []
    if "RedrivePolicy" in attrs:
        # A queue with its own redrive policy is a live queue: every peek counts as a receive
        # and could push a message on to its DLQ. Counts only.
        note = "queue has a redrive policy: messages not sampled (a peek counts as a receive)"
    elif scan > 0:
        messages = peek(sqs, queue.url, limit=scan, visibility_s=PEEK_VISIBILITY_S)
    groups = _group_reasons(messages)
    sample_rows = [_sample(message) for message in messages[:samples]]
    data = {
        "queue": queue.label,
        "url": queue.url,
        "messages": visible + in_flight,
        "visible": visible,
        "in_flight": in_flight,
        "scanned": len(messages),
        "reasons": groups,
        "samples": sample_rows,
        "note": note,
    }
    text = "\n".join(
        [
            key_values(
                [
                    ("queue", f"{queue.label} ({queue.url})"),
                    (
                        "messages",
                        f"{visible + in_flight} ({visible} visible, {in_flight} in flight)",
                    ),
                    ("scanned", len(messages)),
                ]
            ),
            *([f"note: {note}"] if note else []),
            "reasons:",
            table(groups, ["count", "reason", "order_ids"]),
            "samples (secrets masked):",
            *[f"  {json.dumps(row, sort_keys=True, default=str)}" for row in sample_rows],
        ]
    )
    return Report(data, text)


def _decoded(message: dict[str, Any]) -> Any:
    try:
        return json.loads(message.get("Body", ""))
    except ValueError:
        return None


def _reason(message: dict[str, Any]) -> str:
    attribute = message.get("MessageAttributes", {}).get("failure_reason", {})
    if attribute.get("StringValue"):
        # Truncated so reasons that differ only in the echoed input still group together.
        return mask_text(str(attribute["StringValue"]))[:REASON_WIDTH]
    body = _decoded(message)
    if isinstance(body, dict) and isinstance(body.get("failed_compensation"), str):
        return str(body["failed_compensation"])
    return UNKNOWN_REASON


def _order_id(message: dict[str, Any]) -> str | None:
    body = _decoded(message)
    if not isinstance(body, dict):
        return None
    order = body.get("order")
    candidate = order.get("order_id") if isinstance(order, dict) else body.get("order_id")
    return candidate if isinstance(candidate, str) else None


def _group_reasons(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    orders: dict[str, list[str]] = {}
    for message in messages:
        reason = _reason(message)
        counts[reason] += 1
        order_id = _order_id(message)
        if order_id and order_id not in orders.setdefault(reason, []):
            orders[reason].append(order_id)
    return [
        {"reason": reason, "count": count, "order_ids": orders.get(reason, [])[:10]}
        for reason, count in counts.most_common()
    ]


def _sample(message: dict[str, Any]) -> dict[str, Any]:
    system = message.get("Attributes", {})
    return {
        "message_id": message.get("MessageId"),
        "sent_at": iso_from_epoch_ms(system.get("SentTimestamp")),
        "receive_count": system.get("ApproximateReceiveCount"),
        "reason": _reason(message),
        "body": mask_body(message.get("Body", "")),
    }


# -- redrive ---------------------------------------------------------------------------------


def redrive(
    sqs: SQSClient,
    queue: QueueRef,
    *,
    max_messages: int | None,
    rate: int | None,
    sleep: Callable[[float], None] = time.sleep,
    endpoint_url: str | None = None,
) -> Report:
    """``endpoint_url``: the SQS endpoint when it is not AWS's (the local stack), for the
    follow-up commands the report prints."""
    if queue.is_needs_attention:
        return refusal(
            "the needs-attention queue has no source queue: its messages are failed "
            "compensations of finished executions, not undelivered work",
            instead="for each order in `orders-ops dlq inspect needs-attention`, read "
            "`orders-ops saga show <order_id>` and use `orders-ops saga redrive <order_id>` "
            "(runbooks/F08-partial-failure.md); delete a message only once its order is settled",
            queue=queue.label,
        )
    arn = queue_attributes(sqs, queue.url, ["QueueArn"])["QueueArn"]
    sources = sqs.list_dead_letter_source_queues(QueueUrl=queue.url).get("queueUrls", [])
    if not sources:
        return refusal(
            f"{queue.url} is not the dead-letter queue of any queue (no redrive policy "
            "names it), so there is nowhere to move its messages back to",
            instead="inspect it with `orders-ops dlq inspect`; for needs-attention use "
            "`orders-ops saga redrive <order_id>`",
            queue=queue.label,
        )
    if max_messages is None:
        return _start_move_task(
            sqs, queue, arn=arn, sources=sources, rate=rate, endpoint_url=endpoint_url
        )
    return _move_bounded(
        sqs, queue, sources=sources, max_messages=max_messages, rate=rate, sleep=sleep
    )


def _start_move_task(
    sqs: SQSClient,
    queue: QueueRef,
    *,
    arn: str,
    sources: list[str],
    rate: int | None,
    endpoint_url: str | None,
) -> Report:
    # No DestinationArn: SQS returns each message to the queue it was dead-lettered from.
    if rate is None:
        response = sqs.start_message_move_task(SourceArn=arn)
    else:
        response = sqs.start_message_move_task(SourceArn=arn, MaxNumberOfMessagesPerSecond=rate)
    handle = response["TaskHandle"]
    endpoint = f" --endpoint-url {endpoint_url}" if endpoint_url else ""
    data = {
        "queue": queue.label,
        "source_arn": arn,
        "destination": "original source queues",
        "source_queues": sources,
        "rate_per_second": rate,
        "task_handle": handle,
    }
    text = "\n".join(
        [
            key_values(
                [
                    ("queue", f"{queue.label} ({arn})"),
                    ("moving to", ", ".join(sources)),
                    ("rate", f"{rate}/s" if rate else "SQS default"),
                    ("task handle", handle),
                ]
            ),
            f"progress: aws sqs list-message-move-tasks --source-arn {arn}{endpoint}",
            f"stop:     aws sqs cancel-message-move-task --task-handle {handle}{endpoint}",
        ]
    )
    return Report(data, text)


def _move_bounded(
    sqs: SQSClient,
    queue: QueueRef,
    *,
    sources: list[str],
    max_messages: int,
    rate: int | None,
    sleep: Callable[[float], None],
) -> Report:
    """Move at most ``max_messages`` back by receive -> send -> delete.

    StartMessageMoveTask cannot stop after N messages, so ``--max`` (a canary: send a few
    back and watch them) needs this loop. Send before delete: a crash in between leaves a
    copy in both queues, which the idempotent intake absorbs (F01); the other order could
    lose a message. Message attributes are kept, as a move task keeps them.
    """
    if len(sources) != 1:
        raise UsageError(
            f"--max needs one source queue, {queue.url} is the DLQ of {len(sources)}: "
            "run without --max to let SQS return each message to its own source"
        )
    (destination,) = sources
    if destination.endswith(".fifo"):
        raise UsageError("--max does not handle FIFO queues (message groups); run without it")
    moved = 0
    started = time.monotonic()
    while moved < max_messages:
        batch = sqs.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=min(SQS_BATCH_MAX, max_messages - moved),
            VisibilityTimeout=MOVE_VISIBILITY_S,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            if rate:
                # Never faster than --rate, counted from the start of the run.
                sleep(max(0.0, started + moved / rate - time.monotonic()))
            attributes = _sendable_attributes(message.get("MessageAttributes", {}))
            if attributes:
                sqs.send_message(
                    QueueUrl=destination,
                    MessageBody=message["Body"],
                    MessageAttributes=attributes,
                )
            else:
                sqs.send_message(QueueUrl=destination, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    remaining = int(
        queue_attributes(sqs, queue.url, ["ApproximateNumberOfMessages"]).get(
            "ApproximateNumberOfMessages", "0"
        )
    )
    data = {
        "queue": queue.label,
        "destination": destination,
        "moved": moved,
        "max": max_messages,
        "remaining_visible": remaining,
    }
    text = key_values(
        [
            ("queue", queue.label),
            ("moved to", destination),
            ("moved", f"{moved} (max {max_messages})"),
            ("still in DLQ", f"~{remaining} visible"),
        ]
    )
    return Report(data, text)


def _sendable_attributes(
    received: dict[str, Any],
) -> dict[str, MessageAttributeValueTypeDef]:
    sendable: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in received.items():
        attribute: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
        if "StringValue" in value:
            attribute["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["BinaryValue"] = value["BinaryValue"]
        sendable[name] = attribute
    return sendable
