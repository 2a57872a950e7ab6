"""F17 Data silently dropped: every asynchronous path ends in success, a DLQ or an on-failure
destination, and every dead end has an alarm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.guardrails import TERMINAL_QUEUE_KEY, Resources
from infra.saga import COMPENSATION_STEPS
from tests.catalogue.templates import Saga, resources
from tests.infra.conftest import Synthesized

ASYNC_PRINCIPALS = frozenset(
    {"sns.amazonaws.com", "events.amazonaws.com", "s3.amazonaws.com", "scheduler.amazonaws.com"}
)


def alarmed_queues(res: Resources) -> set[str]:
    """Queues with an alarm on visible messages that notifies someone."""
    found: set[str] = set()
    for _, props in res.of_type("AWS::CloudWatch::Alarm"):
        if props.get("MetricName") != "ApproximateNumberOfMessagesVisible":
            continue
        if not props.get("AlarmActions"):
            continue
        if props.get("ComparisonOperator") == "GreaterThanThreshold":
            assert props.get("Threshold", 1) < 1, "a non-empty dead end must alarm on 1 message"
        for dimension in props.get("Dimensions", []):
            if dimension["Name"] == "QueueName":
                found |= set(res.referenced(dimension["Value"], "AWS::SQS::Queue"))
    return found


def redrive_targets(res: Resources) -> set[str]:
    """Queues used as another resource's DLQ (queue redrive or SNS subscription redrive)."""
    targets: set[str] = set()
    for _, props in res.of_type("AWS::SQS::Queue", "AWS::SNS::Subscription"):
        policy: Mapping[str, Any] = props.get("RedrivePolicy") or {}
        targets |= set(res.referenced(policy.get("deadLetterTargetArn"), "AWS::SQS::Queue"))
    return targets


def test_f17_every_queue_is_redriven_or_an_alarmed_dead_end(stage_stack: Synthesized) -> None:
    """Given every SQS queue, then it is consumed and redrives to a DLQ (maxReceiveCount set),
    or it is a DLQ with a visible-messages alarm, or it is the terminal needs-attention queue
    with an alarm. Nothing else may exist.

    Fails if: the orders queue loses its RedrivePolicy, a DLQ or the needs-attention queue
    loses its `*-not-empty` alarm (or the alarm its action), or a queue is added that fits none.
    """
    res = resources(stage_stack)
    consumed = {
        queue
        for _, props in res.of_type("AWS::Lambda::EventSourceMapping")
        for queue in res.referenced(props["EventSourceArn"], "AWS::SQS::Queue")
    }
    dlqs = redrive_targets(res)
    alarmed = alarmed_queues(res)
    queues = list(res.of_type("AWS::SQS::Queue"))

    assert consumed
    assert dlqs
    for queue, props in queues:
        if queue in consumed:
            policy = props.get("RedrivePolicy") or {}
            assert res.referenced(policy.get("deadLetterTargetArn"), "AWS::SQS::Queue"), queue
            assert policy.get("maxReceiveCount", 0) >= 1, queue
        elif queue in dlqs:
            assert queue in alarmed, f"DLQ {queue} has no visible-messages alarm"
        else:
            reason = res.metadata(queue).get(TERMINAL_QUEUE_KEY)
            assert isinstance(reason, str), f"{queue} is no path's end"
            assert reason.strip(), f"{queue} is marked terminal without a reason"
            assert queue in alarmed, f"terminal queue {queue} has no alarm"


def test_f17_every_async_invocation_keeps_its_failures(stage_stack: Synthesized) -> None:
    """Given every async invoke config, async-invoking permission and SNS subscription, then each
    has an OnFailure destination / DLQ (none are async-invoked today: the walk must stay green
    when one is added only if it keeps its failures).

    Fails if: an EventInvokeConfig without OnFailure, an async-invoked function without one,
    or an SNS subscription without RedrivePolicy is added.
    """
    res = resources(stage_stack)
    covered: set[str] = set()
    for logical_id, props in res.of_type("AWS::Lambda::EventInvokeConfig"):
        destination = (props.get("DestinationConfig") or {}).get("OnFailure") or {}
        assert destination.get("Destination") is not None, logical_id
        fn = res.function_of(props.get("FunctionName"))
        if fn is not None:
            covered.add(fn)
    for logical_id, props in res.of_type("AWS::Lambda::Permission"):
        if props.get("Principal") in ASYNC_PRINCIPALS:
            fn = res.function_of(props.get("FunctionName"))
            has_dlq = fn is not None and res.props(fn).get("DeadLetterConfig")
            assert fn in covered or has_dlq, logical_id
    for logical_id, props in res.of_type("AWS::SNS::Subscription"):
        assert (props.get("RedrivePolicy") or {}).get("deadLetterTargetArn"), logical_id


def test_f17_a_failed_compensation_ends_in_a_needs_attention_send_then_fail(
    stage_stack: Synthesized,
) -> None:
    """Given the saga, when a compensation's Catch is followed, then it reaches an SQS send to
    the terminal (alarmed) queue whose only successor is a Fail state.

    Fails if: a compensation loses its Catch, the Catch goes anywhere but the escalation, the
    escalation targets another queue, or it ends in Succeed/Pass instead of Fail.
    """
    saga = Saga(stage_stack)
    res = resources(stage_stack)
    alarmed = alarmed_queues(res)
    for step in COMPENSATION_STEPS:
        catches = saga.state(step).get("Catch", [])
        assert any("States.ALL" in c["ErrorEquals"] for c in catches), step
        for catch in catches:
            send = saga.state(catch["Next"])
            assert send["Type"] == "Task", step
            assert send["Resource"].endswith(":states:::sqs:sendMessage"), step
            queue_url = saga.tokens_in(send["Parameters"]["QueueUrl"])
            (queue,) = res.referenced(queue_url, "AWS::SQS::Queue")
            assert res.metadata(queue).get(TERMINAL_QUEUE_KEY), step
            assert queue in alarmed, step
            assert "Catch" not in send, "a failed escalation must fail the execution"
            assert saga.state(send["Next"])["Type"] == "Fail", step
