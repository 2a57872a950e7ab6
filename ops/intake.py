"""``intake pause | resume | status``: the F19 switch on the Intake's SQS event source mapping.

Pausing disables the mapping: Lambda stops polling, in-flight batches finish, and new orders
wait in the orders queue (the API keeps accepting them) until it is resumed. They wait only
for the queue's retention period, which ``status`` shows (F17: nothing may expire unseen).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from ops.aws import AwsClients, error_code
from ops.errors import NotFound, UsageError
from ops.output import Report, key_values
from ops.queues import peek, queue_attributes, queue_url_from_arn

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_lambda.type_defs import EventSourceMappingConfigurationTypeDef

# infra/functions.py LIVE_ALIAS: the stack attaches the mapping to the alias, not $LATEST.
LIVE_ALIAS: Final = "live"
PAUSED_STATES: Final = frozenset({"Disabled", "Disabling"})
RUNNING_STATES: Final = frozenset({"Enabled", "Enabling"})
AGE_METRIC_WINDOW: Final = timedelta(minutes=15)


def find_mapping(
    lambda_: LambdaClient, function: str, *, uuid: str | None = None
) -> EventSourceMappingConfigurationTypeDef:
    """The Intake's one SQS mapping, looked up on the live alias first, then the function."""
    candidates = [function] if _is_qualified(function) else [f"{function}:{LIVE_ALIAS}", function]
    for name in candidates:
        mappings = [m for m in _list_mappings(lambda_, name) if _is_sqs(m)]
        if uuid is not None:
            mappings = [m for m in mappings if m.get("UUID") == uuid]
        if len(mappings) == 1:
            return mappings[0]
        if len(mappings) > 1:
            listed = ", ".join(str(m.get("UUID")) for m in mappings)
            raise UsageError(f"{name} has {len(mappings)} SQS mappings ({listed}): pass --uuid")
    looked = " and ".join(candidates)
    suffix = f" with UUID {uuid}" if uuid else ""
    raise NotFound(
        f"no SQS event source mapping{suffix} for the Intake function (looked at {looked})"
    )


def _is_qualified(function: str) -> bool:
    # name:alias, or arn:aws:lambda:<region>:<account>:function:<name>:<alias>
    if function.startswith("arn:"):
        return len(function.split(":")) == 8
    return ":" in function


def _is_sqs(mapping: EventSourceMappingConfigurationTypeDef) -> bool:
    return mapping.get("EventSourceArn", "").startswith("arn:aws:sqs:")


def _list_mappings(
    lambda_: LambdaClient, function: str
) -> list[EventSourceMappingConfigurationTypeDef]:
    found: list[EventSourceMappingConfigurationTypeDef] = []
    try:
        for page in lambda_.get_paginator("list_event_source_mappings").paginate(
            FunctionName=function
        ):
            found.extend(page.get("EventSourceMappings", []))
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            return []
        raise
    return found


def switch(lambda_: LambdaClient, function: str, *, enable: bool, uuid: str | None) -> Report:
    mapping = find_mapping(lambda_, function, uuid=uuid)
    mapping_uuid = mapping.get("UUID", "")
    before = mapping.get("State", "")
    target = RUNNING_STATES if enable else PAUSED_STATES
    verb = "resumed" if enable else "paused"
    if before in target:
        # Repeating the command is harmless; an update while Disabling/Enabling would fail.
        state, changed = before, False
    else:
        updated = lambda_.update_event_source_mapping(UUID=mapping_uuid, Enabled=enable)
        state, changed = updated.get("State", ""), True
    data = {
        "uuid": mapping_uuid,
        "function": mapping.get("FunctionArn"),
        "queue_arn": mapping.get("EventSourceArn"),
        "state_before": before,
        "state": state,
        "changed": changed,
    }
    follow_up = (
        "messages already waiting are processed at the mapping's MaximumConcurrency"
        if enable
        else "new orders wait in the queue; in-flight batches finish. Resume with "
        "`orders-ops intake resume` before the queue's retention runs out (`intake status`)"
    )
    text = "\n".join(
        [
            f"intake {verb}" + ("" if changed else f" already ({before}): nothing changed"),
            key_values([("mapping", mapping_uuid), ("queue", data["queue_arn"]), ("state", state)]),
            follow_up,
        ]
    )
    return Report(data, text)


def status(clients: AwsClients, function: str, *, uuid: str | None, peek_age: bool) -> Report:
    mapping = find_mapping(clients.lambda_, function, uuid=uuid)
    queue_arn = mapping.get("EventSourceArn", "")
    queue_url = queue_url_from_arn(clients.sqs, queue_arn)
    attrs = queue_attributes(
        clients.sqs,
        queue_url,
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "MessageRetentionPeriod",
        ],
    )
    age_s, age_source = _oldest_age(clients, queue_url, queue_arn, peek_age=peek_age)
    retention_s = int(attrs.get("MessageRetentionPeriod", "0")) or None
    warning = None
    if age_s is not None and retention_s and age_s > retention_s / 2:
        warning = (
            f"oldest message is {age_s}s old, retention is {retention_s}s: resume or drain "
            "before messages expire (F17)"
        )
    state = mapping.get("State", "")
    scaling = mapping.get("ScalingConfig", {})
    data = {
        "uuid": mapping.get("UUID"),
        "state": state,
        "paused": state in PAUSED_STATES,
        "state_reason": mapping.get("StateTransitionReason"),
        "last_modified": mapping.get("LastModified"),
        "batch_size": mapping.get("BatchSize"),
        "maximum_concurrency": scaling.get("MaximumConcurrency"),
        "queue_url": queue_url,
        "visible": int(attrs.get("ApproximateNumberOfMessages", "0")),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", "0")),
        "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", "0")),
        "retention_s": retention_s,
        "oldest_age_s": age_s,
        "oldest_age_source": age_source,
        "warning": warning,
    }
    text = key_values(
        [
            ("mapping", f"{data['uuid']} {state}" + (" (PAUSED)" if data["paused"] else "")),
            ("batch size", data["batch_size"]),
            ("max concurrency", data["maximum_concurrency"]),
            ("queue", queue_url),
            ("depth", f"{data['visible']} visible, {data['in_flight']} in flight"),
            ("oldest message", f"~{age_s}s ({age_source})" if age_s is not None else age_source),
            ("retention", f"{retention_s}s" if retention_s else None),
            *([("WARNING", warning)] if warning else []),
        ]
    )
    return Report(data, text)


def _oldest_age(
    clients: AwsClients, queue_url: str, queue_arn: str, *, peek_age: bool
) -> tuple[int | None, str]:
    """Age of the oldest message: the SQS metric if there is one, else a peek on request.

    The metric is what the F02-intake-oldest-message-age alarm reads. A peek is opt-in
    because it is a real receive on the live queue: it counts toward the message's
    maxReceiveCount (a message peeked often enough reaches the DLQ early), and it sees at
    most ten messages, which SQS does not return oldest first. So it is approximate, a
    lower bound.
    """
    age = _age_from_metric(clients.cloudwatch, queue_arn.rsplit(":", maxsplit=1)[-1])
    if age is not None:
        return age, "CloudWatch ApproximateAgeOfOldestMessage, last datapoint"
    if not peek_age:
        return None, "unknown: no CloudWatch datapoint (use --peek for an estimate)"
    messages = peek(clients.sqs, queue_url, limit=10, visibility_s=0, wait_s=0)
    sent = [int(m["Attributes"]["SentTimestamp"]) for m in messages if "Attributes" in m]
    if not sent:
        return None, "queue empty (peek)"
    age_s = int(time.time() - min(sent) / 1000)
    return max(age_s, 0), f"approximate: peek of {len(sent)} message(s), a lower bound"


def _age_from_metric(cloudwatch: Any, queue_name: str) -> int | None:
    end = datetime.now(tz=UTC)
    try:
        points = cloudwatch.get_metric_statistics(
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            StartTime=end - AGE_METRIC_WINDOW,
            EndTime=end,
            Period=60,
            Statistics=["Maximum"],
        ).get("Datapoints", [])
    except ClientError:
        # Reading a metric is a nicety here; the queue depth above is the essential part.
        return None
    if not points:
        return None
    latest = max(points, key=lambda p: p["Timestamp"])
    return int(latest["Maximum"])
