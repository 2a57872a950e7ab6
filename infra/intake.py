"""Orders queue -> Intake: a bounded, poison-tolerant event source mapping (F02, F05)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sqs as sqs

from infra.config import StageConfig
from infra.functions import HardenedFunction


def connect_intake(
    intake: HardenedFunction, queue: sqs.IQueue, *, config: StageConfig
) -> event_sources.SqsEventSource:
    """Attach the queue to Intake's `live` alias, so a canary shifts queue traffic too (F12)."""
    settings = config.queue
    source = event_sources.SqsEventSource(
        queue,
        batch_size=settings.batch_size,
        max_batching_window=Duration.seconds(settings.max_batching_window_s),
        # F02: only the failed records return to the queue, the rest of the batch is done.
        report_batch_item_failures=True,
        # F05: the mapping never scales Intake (and Step Functions starts) past this.
        max_concurrency=settings.max_concurrency,
    )
    intake.alias.add_event_source(source)
    return source
