"""The SQS -> Lambda event source mapping, honouring the template's settings.

Lambda's pollers are part of the platform, so locally they run in the parent process: they
receive from moto's queue, build the real SQS event, invoke the function's worker and then
delete what succeeded. What the template says is what happens: ``BatchSize``,
``MaximumBatchingWindowInSeconds``, ``FunctionResponseTypes: [ReportBatchItemFailures]``
(F02: only the failed records stay) and ``ScalingConfig.MaximumConcurrency`` (F05: the number
of concurrent invocations). Redrive to the DLQ at ``maxReceiveCount`` is moto's, on receive.

One deliberate difference, announced at start: a failed record becomes visible again after a
scaled-down visibility timeout (``local_retry_visibility``) instead of the queue's full one.

The mapping's ``State`` is moto's (``mapping_uuid``): ``orders-ops intake pause|resume`` or
``aws lambda update-event-source-mapping`` switch it, and the poller re-reads it every
``_STATE_POLL_S`` (F19); with a mapping, ``set_enabled`` is only the follower's setter. A batch
received across the switch goes back to the queue unprocessed (visible at once; like any
receive, it counts toward the queue's maxReceiveCount).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.config import Config

from devstack.differences import announce
from devstack.lambda_runtime import Invoker, InvokeResult
from devstack.template import EventSourceMappingSpec

DEFAULT_RETRY_VISIBILITY_SCALE: Final = 0.01
DEFAULT_CONCURRENCY: Final = 2  # Lambda's minimum MaximumConcurrency; used when none is set
_POLL_WAIT_S: Final = 1  # long poll per receive; short, so stop() is prompt
_SQS_MAX_PER_RECEIVE: Final = 10
_STATE_POLL_S: Final = 0.5  # how often a mapping's State is re-read from moto
_RUNNING_STATES: Final = frozenset({"Enabled", "Enabling"})
_DRAIN_POLL_S: Final = 0.05  # drain()'s look at the queue: one GetQueueAttributes, ~2 ms


def local_retry_visibility(queue_visibility_s: int, scale: float) -> int:
    """THE place where local retries of failed records are faster than in AWS.

    In AWS a failed record is retried after the queue's visibility timeout (F07: at least 6x
    the function timeout, minutes). Locally it is scaled down; SQS takes whole seconds.
    """
    return max(0, round(queue_visibility_s * scale))


@dataclass
class PollerStats:
    invocations: int = 0
    function_errors: int = 0
    records_succeeded: int = 0
    records_failed: int = 0


class SqsEventSourcePoller:
    """Polls one queue for one function, like an AWS::Lambda::EventSourceMapping."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        queue_url: str,
        queue_arn: str,
        invoker: Invoker,
        invoked_function_arn: str | None = None,
        batch_size: int = 10,
        maximum_batching_window_s: float = 0,
        report_batch_item_failures: bool = False,
        maximum_concurrency: int | None = None,
        retry_visibility_s: int = 0,
        enabled: bool = True,
        mapping_uuid: str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.queue_url = queue_url
        self.mapping_uuid = mapping_uuid
        self.queue_arn = queue_arn
        self.region = region
        self.invoker = invoker
        self.invoked_function_arn = invoked_function_arn
        self.batch_size = batch_size
        self.window_s = maximum_batching_window_s
        self.report_batch_item_failures = report_batch_item_failures
        self.concurrency = maximum_concurrency or DEFAULT_CONCURRENCY
        self.retry_visibility_s = retry_visibility_s
        self.stats = PollerStats()
        self._say = say or (lambda m: print(f"devstack: {m}", file=sys.stderr, flush=True))
        self._sqs: Any = boto3.client(
            "sqs",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
            config=Config(max_pool_connections=self.concurrency + 4, retries={"max_attempts": 2}),
        )
        self._lambda: Any = None
        if mapping_uuid is not None:
            self._lambda = boto3.client(
                "lambda",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
            )
        self._enabled = threading.Event()
        if enabled:
            self._enabled.set()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._in_flight = 0

    @classmethod
    def from_template(
        cls,
        mapping: EventSourceMappingSpec,
        *,
        queue_visibility_s: int,
        endpoint_url: str,
        region: str,
        queue_url: str,
        queue_arn: str,
        invoker: Invoker,
        invoked_function_arn: str | None = None,
        retry_visibility_scale: float = DEFAULT_RETRY_VISIBILITY_SCALE,
        mapping_uuid: str | None = None,
        say: Callable[[str], None] | None = None,
    ) -> SqsEventSourcePoller:
        return cls(
            endpoint_url=endpoint_url,
            region=region,
            queue_url=queue_url,
            queue_arn=queue_arn,
            invoker=invoker,
            invoked_function_arn=invoked_function_arn,
            batch_size=mapping.batch_size,
            maximum_batching_window_s=mapping.maximum_batching_window_s,
            report_batch_item_failures=mapping.report_batch_item_failures,
            maximum_concurrency=mapping.maximum_concurrency,
            retry_visibility_s=local_retry_visibility(queue_visibility_s, retry_visibility_scale),
            enabled=mapping.enabled,
            mapping_uuid=mapping_uuid,
            say=say,
        )

    # lifecycle

    def start(self) -> None:
        announce(
            self._say,
            "failed-record-retry-scaled",
            f"event source {self.queue_arn.rsplit(':', 1)[-1]}: batch {self.batch_size}, "
            f"window {self.window_s}s, concurrency {self.concurrency}, "
            f"partial batch responses {'on' if self.report_batch_item_failures else 'off'}; "
            f"failed records retried after {self.retry_visibility_s}s (scaled, not the "
            "queue's visibility timeout)",
        )
        self._stopping.clear()
        for i in range(self.concurrency):
            t = threading.Thread(target=self._run, name=f"esm-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.mapping_uuid is not None:
            t = threading.Thread(target=self._follow_state, name="esm-state", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()
        self._enabled.set()  # wake paused pollers so they see the stop
        for t in self._threads:
            t.join(timeout=_POLL_WAIT_S + 30)
        self._threads.clear()

    def __enter__(self) -> SqsEventSourcePoller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_enabled(self, enabled: bool) -> None:
        """The F19 ops switch: a disabled mapping leaves messages waiting in the queue."""
        if enabled:
            self._enabled.set()
        else:
            self._enabled.clear()

    @property
    def enabled(self) -> bool:
        return self._enabled.is_set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the queue has no visible, delayed or in-flight message."""
        deadline = time.monotonic() + timeout
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        while time.monotonic() < deadline:
            attrs = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=names)
            pending = sum(int(attrs["Attributes"].get(n, 0)) for n in names)
            if self._in_flight == 0 and pending == 0:
                return True
            # Soon again near the end; less often with a backlog (each look scans the queue).
            time.sleep(_DRAIN_POLL_S if pending <= _SQS_MAX_PER_RECEIVE else 4 * _DRAIN_POLL_S)
        return False

    # polling

    def _follow_state(self) -> None:
        """Enabled/Disabled as moto's mapping says (the F19 switch an operator flips)."""
        while not self._stopping.wait(_STATE_POLL_S):
            try:
                state = self._lambda.get_event_source_mapping(UUID=self.mapping_uuid)["State"]
            except Exception as exc:  # noqa: BLE001 - keep the last state, as Lambda would
                self._say(f"event source state read failed: {exc!r}")
                continue
            if not self._stopping.is_set():
                self.set_enabled(state in _RUNNING_STATES)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._enabled.wait(_POLL_WAIT_S):  # timed: the state follower may race stop()
                continue
            if self._stopping.is_set():
                return
            try:
                self._poll_once()
            except Exception as exc:  # noqa: BLE001 - a poller must survive a bad poll
                self._say(f"event source poll failed: {exc!r}")
                time.sleep(0.5)

    def _poll_once(self) -> None:
        messages = self._collect()
        if not messages:
            return
        if not self._enabled.is_set():
            # Disabled while this poll waited: the batch goes back to the queue unprocessed.
            self._change_visibility(messages, 0)
            return
        # Received messages count as not visible in SQS until deleted; this counter covers
        # the moment between a delete and the batch's end, so drain() never sees a gap.
        with self._lock:
            self._in_flight += 1
        try:
            self._process(messages)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _collect(self) -> list[dict[str, Any]]:
        """One batch: up to BatchSize records, waiting at most the batching window."""
        batch = self._receive(min(self.batch_size, _SQS_MAX_PER_RECEIVE), _POLL_WAIT_S)
        if not batch or self.window_s <= 0:
            return batch
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.batch_size and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wanted = min(self.batch_size - len(batch), _SQS_MAX_PER_RECEIVE)
            more = self._receive(wanted, 1 if remaining >= 1 else 0)
            if not more:
                time.sleep(min(0.05, max(remaining, 0)))
            batch.extend(more)
        return batch

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _process(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        result = self.invoker.invoke(event, invoked_function_arn=self.invoked_function_arn)
        failed_ids = self._failed_ids(result, {m["MessageId"] for m in messages})
        succeeded = [m for m in messages if m["MessageId"] not in failed_ids]
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        with self._lock:
            self.stats.invocations += 1
            self.stats.function_errors += result.errored
            self.stats.records_succeeded += len(succeeded)
            self.stats.records_failed += len(failed)
        for chunk in _chunks(succeeded):
            self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )
        self._change_visibility(failed, self.retry_visibility_s)

    def _change_visibility(self, messages: list[dict[str, Any]], visibility_s: int) -> None:
        for chunk in _chunks(messages):
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": visibility_s,
                    }
                    for i, m in enumerate(chunk)
                ],
            )

    def _failed_ids(self, result: InvokeResult, batch_ids: set[str]) -> set[str]:
        """Lambda's rules for a batch response (the whole batch fails on anything invalid)."""
        if result.errored:
            return batch_ids
        if not self.report_batch_item_failures:
            return set()
        try:
            response = json.loads(result.payload)
        except ValueError:
            return batch_ids
        if not isinstance(response, Mapping):
            return set() if response is None else batch_ids
        failures = response.get("batchItemFailures")
        if failures is None:
            return set()
        ids: set[str] = set()
        for item in failures if isinstance(failures, list) else [None]:
            ident = item.get("itemIdentifier") if isinstance(item, Mapping) else None
            if not isinstance(ident, str) or ident not in batch_ids:
                return batch_ids
            ids.add(ident)
        return ids

    def _record(self, message: Mapping[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _lambda_message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


def _lambda_message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API shape -> the camelCase shape Lambda puts in the event (binary as base64)."""
    out: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(v).decode() for v in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return out


def _chunks(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [items[i : i + _SQS_MAX_PER_RECEIVE] for i in range(0, len(items), 10)]


__all__ = [
    "DEFAULT_RETRY_VISIBILITY_SCALE",
    "PollerStats",
    "SqsEventSourcePoller",
    "local_retry_visibility",
]
