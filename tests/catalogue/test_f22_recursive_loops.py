"""F22 Misfires and recursive loops: loop detection left on; no function may write to the
trigger it consumes, and the guardrail proves it on the event graph."""

from __future__ import annotations

from typing import Any

import pytest

from infra.guardrails import check_template
from tests.catalogue.templates import acknowledged, our_functions, resources
from tests.infra.conftest import Synthesized


def test_f22_every_function_terminates_recursive_loops(stage_stack: Synthesized) -> None:
    """Given every function of the stack, then RecursiveLoop is Terminate; a CDK-owned provider
    may leave it unset (the AWS default is Terminate) only with an F22 acknowledgement, and
    `Allow` is never accepted.

    Fails if: `recursive_loop=RecursiveLoop.TERMINATE` is dropped in infra/functions.py or
    set to ALLOW anywhere.
    """
    ours = {logical_id for logical_id, _ in our_functions(stage_stack).values()}
    functions = list(resources(stage_stack).of_type("AWS::Lambda::Function"))
    assert ours
    for logical_id, props in functions:
        loop = props.get("RecursiveLoop")
        if logical_id in ours:
            assert loop == "Terminate", logical_id
        else:
            assert loop == "Terminate" or (
                loop is None and acknowledged(stage_stack, logical_id, "F22")
            ), logical_id


def test_f22_the_synthesized_event_graph_has_no_cycle(stage_stack: Synthesized) -> None:
    """Given the real template, when the guardrail walks its event graph, then no F22 finding."""
    assert [v for v in check_template(stage_stack.raw) if v.catalogue_id == "F22"] == []


def self_feeding_template(*, writes_to: str) -> dict[str, Any]:
    """Queue `Trigger` -> function `Worker`, whose role may SendMessage to `writes_to`."""
    return {
        "Resources": {
            "Trigger": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "VisibilityTimeout": 60,
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": ["Dlq", "Arn"]},
                        "maxReceiveCount": 3,
                    },
                },
            },
            "Elsewhere": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": ["Dlq", "Arn"]},
                        "maxReceiveCount": 3,
                    }
                },
            },
            "Dlq": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
            "WritePolicy": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "Roles": [{"Ref": "Role"}],
                    "PolicyDocument": {
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
                                "Resource": {"Fn::GetAtt": [writes_to, "Arn"]},
                            }
                        ]
                    },
                },
            },
            "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 14}},
            "Worker": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Role": {"Fn::GetAtt": ["Role", "Arn"]},
                    "Timeout": 10,
                    "ReservedConcurrentExecutions": 2,
                    "TracingConfig": {"Mode": "Active"},
                    "LoggingConfig": {"LogGroup": {"Ref": "Logs"}},
                    "RecursiveLoop": "Terminate",
                },
            },
            "Mapping": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "EventSourceArn": {"Fn::GetAtt": ["Trigger", "Arn"]},
                    "FunctionName": {"Ref": "Worker"},
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                    "ScalingConfig": {"MaximumConcurrency": 2},
                },
            },
        }
    }


def test_f22_guardrail_rejects_a_function_that_can_write_to_its_own_trigger() -> None:
    """Given a function consuming queue Trigger whose role may sqs:SendMessage to Trigger, when
    checked, then the guardrail reports exactly that F22 cycle on the function.

    Fails if: `function_does_not_feed_its_trigger` is removed from RULES, or the event graph
    stops following IAM::Policy statements or event source mappings.
    """
    violations = check_template(self_feeding_template(writes_to="Trigger"))

    assert [(v.catalogue_id, v.logical_id) for v in violations] == [("F22", "Worker")]
    assert "Worker -> Trigger -> Worker" in violations[0].message


@pytest.mark.parametrize("target", ["Elsewhere", "Dlq"])
def test_f22_guardrail_accepts_a_function_writing_to_another_queue(target: str) -> None:
    """Given the same function writing to a queue it does not consume, then nothing is reported.

    Fails if: the cycle rule flags any function that writes to any queue.
    """
    assert check_template(self_feeding_template(writes_to=target)) == []
