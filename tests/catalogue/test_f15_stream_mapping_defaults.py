"""F15 Event source mapping defaults: a stream mapping must bound its retries and its records,
bisect, keep what finally fails and set its parallelization; the guardrail enforces it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra.guardrails import check_template

REQUIRED_SETTINGS = (
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "DestinationConfig",
    "ParallelizationFactor",
)
STREAM_SOURCES: dict[str, dict[str, Any]] = {
    "kinesis": {
        "Type": "AWS::Kinesis::Stream",
        "Properties": {"ShardCount": 1},
        "arn": {"Fn::GetAtt": ["Source", "Arn"]},
    },
    "dynamodb": {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamViewType": "NEW_IMAGE"},
        },
        "arn": {"Fn::GetAtt": ["Source", "StreamArn"]},
    },
}


def stream_template(source: str) -> dict[str, Any]:
    """A minimal template that passes every guardrail rule: one function consuming a stream."""
    spec = STREAM_SOURCES[source]
    return {
        "Resources": {
            "Source": {"Type": spec["Type"], "Properties": copy.deepcopy(spec["Properties"])},
            "Role": {"Type": "AWS::IAM::Role", "Properties": {}},
            "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 14}},
            "Consumer": {
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
            "Failures": {"Type": "AWS::SQS::Queue", "Properties": {}},
            "Mapping": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "EventSourceArn": spec["arn"],
                    "FunctionName": {"Ref": "Consumer"},
                    "StartingPosition": "LATEST",
                    "MaximumRetryAttempts": 2,
                    "MaximumRecordAgeInSeconds": 3600,
                    "BisectBatchOnFunctionError": True,
                    "DestinationConfig": {
                        "OnFailure": {"Destination": {"Fn::GetAtt": ["Failures", "Arn"]}}
                    },
                    "ParallelizationFactor": 1,
                },
            },
        }
    }


@pytest.mark.parametrize("source", sorted(STREAM_SOURCES))
def test_f15_guardrail_accepts_a_fully_bounded_stream_mapping(source: str) -> None:
    """Given a stream mapping with all five settings, when checked, then nothing is reported.

    Fails if: the guardrail rejects a compliant mapping (a rule too broad to live with).
    """
    assert check_template(stream_template(source)) == []


@pytest.mark.parametrize("setting", REQUIRED_SETTINGS)
@pytest.mark.parametrize("source", sorted(STREAM_SOURCES))
def test_f15_guardrail_rejects_a_stream_mapping_missing_a_setting(
    source: str, setting: str
) -> None:
    """Given a stream mapping without one of the five settings, when checked, then exactly one
    F15 violation names the mapping and the missing setting.

    Fails if: `stream_mapping_is_bounded` is removed from RULES, drops a setting from
    STREAM_MAPPING_SETTINGS, or stops recognising this source type as a stream.
    """
    template = stream_template(source)
    del template["Resources"]["Mapping"]["Properties"][setting]

    # Only F15 is judged: without DestinationConfig the Failures queue is also orphaned (F17).
    violations = [v for v in check_template(template) if v.catalogue_id == "F15"]

    assert [v.logical_id for v in violations] == ["Mapping"]
    assert setting in violations[0].message
