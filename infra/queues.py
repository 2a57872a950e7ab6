"""Queues. Every asynchronous path ends in a DLQ (F02, F17), built by one reusable unit."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import DLQ_RETENTION, VISIBILITY_TIMEOUT_FACTOR, StageConfig
from infra.nag import acknowledge


def visibility_timeout_for(consumer_timeout: Duration, batching_window_s: int = 0) -> Duration:
    """F07: AWS' rule for SQS -> Lambda: >= 6 x the function timeout (+ batching window), so
    a batch still being processed (or retried after throttling) is not handed out twice."""
    return Duration.seconds(
        VISIBILITY_TIMEOUT_FACTOR * int(consumer_timeout.to_seconds()) + batching_window_s
    )


class QueueWithDlq(Construct):
    """A queue, its DLQ (14 days), SSE and TLS-only on both; `maxReceiveCount` from config."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        visibility_timeout: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
            removal_policy=config.removal_policy,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=config.queue.retention,
            visibility_timeout=visibility_timeout,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dlq, max_receive_count=config.queue.max_receive_count
            ),
            removal_policy=config.removal_policy,
        )


class Queues(Construct):
    """The orders queue (Api -> Intake) with its DLQ, and the saga's needs-attention queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        intake_timeout: Duration,
    ) -> None:
        super().__init__(scope, construct_id)
        self.orders = QueueWithDlq(
            self,
            "Orders",
            config=config,
            visibility_timeout=visibility_timeout_for(
                intake_timeout, config.queue.max_batching_window_s
            ),
        )
        # F08: a compensation that still fails lands here, never silently; 14 days so a
        # human always has time to act. It is itself a terminal queue (nothing consumes it
        # automatically), so it has no DLQ of its own.
        self.needs_attention = sqs.Queue(
            self,
            "NeedsAttention",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
            removal_policy=config.removal_policy,
        )
        acknowledge(
            self.needs_attention,
            {
                "AwsSolutions-SQS3": "F08: the terminal queue of failed compensations; an "
                "operator drains it by runbook, so there is no consumer whose failures need a DLQ",
            },
        )

    @property
    def orders_queue(self) -> sqs.Queue:
        return self.orders.queue

    @property
    def orders_dlq(self) -> sqs.Queue:
        return self.orders.dlq
