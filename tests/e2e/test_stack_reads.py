"""The local stack's own readers, which every report and invariant check relies on: a reader
that misses a message makes a report call it lost (the 10,000-order chaos run once reported
15 poison messages "not dead-lettered" that were in the DLQ all along)."""

from __future__ import annotations

import threading
import uuid

from tests.localstack import Running


def test_queue_messages_reads_a_long_queue_whole_and_leaves_it_as_it_was(
    running: Running,
) -> None:
    """Given a queue of 230 messages (longer than one receive's worth many times over) and one
    more held for a moment by another consumer, when the stack reads the queue, then every
    message comes back exactly once and afterwards all of them are visible again.

    Fails if: queue_messages stops at a time limit, lets the head of the queue come back
    before the tail is read, or leaves what it read invisible."""
    aws = running.stack.aws
    assert aws is not None
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"reader-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    try:
        bodies = {f"message-{i}" for i in range(231)}
        ordered = sorted(bodies)
        for start in range(0, len(ordered), 10):
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "MessageBody": b}
                    for i, b in enumerate(ordered[start : start + 10])
                ],
            )
        # Another consumer takes one message and hands it back a moment later.
        (held,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=30)[
            "Messages"
        ]
        release = threading.Timer(
            0.5,
            lambda: sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=0
            ),
        )
        release.start()

        read = running.stack.queue_messages(url)
        release.join()

        assert sorted(m["Body"] for m in read) == ordered
        attrs = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert attrs == {
            "ApproximateNumberOfMessages": str(len(bodies)),
            "ApproximateNumberOfMessagesNotVisible": "0",
        }
    finally:
        sqs.delete_queue(QueueUrl=url)
