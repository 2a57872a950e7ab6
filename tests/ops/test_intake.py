"""``intake pause | resume | status`` against moto's Lambda event source mappings (F19)."""

from __future__ import annotations

import boto3

from tests.fixtures import AwsResources
from tests.ops.conftest import Cli, IntakeMapping


def _state(mapping: IntakeMapping) -> str:
    return boto3.client("lambda").get_event_source_mapping(UUID=mapping.uuid)["State"]


def test_F19_pause_and_resume_switch_the_intake_mapping(
    cli: Cli, intake_mapping: IntakeMapping
) -> None:
    # Given a running intake (the mapping on the live alias)
    boto3.client("lambda").update_event_source_mapping(UUID=intake_mapping.uuid, Enabled=True)
    cli.flags["--intake-function"] = intake_mapping.function_name

    # When paused
    paused = cli("--json", "intake", "pause")

    # Then the mapping is disabled
    assert paused.code == 0, paused.err
    assert paused.json()["changed"] is True
    assert paused.json()["uuid"] == intake_mapping.uuid
    assert _state(intake_mapping) == "Disabled"

    # And resuming enables it again
    resumed = cli("intake", "resume")
    assert resumed.code == 0, resumed.err
    assert _state(intake_mapping) == "Enabled"


def test_pause_twice_is_harmless(cli: Cli, intake_mapping: IntakeMapping) -> None:
    cli.flags["--intake-function"] = intake_mapping.function_name

    result = cli("--json", "intake", "pause")

    assert result.code == 0, result.err
    assert result.json()["changed"] is False
    assert _state(intake_mapping) == "Disabled"


def test_F19_status_shows_paused_mapping_depth_and_approximate_age(
    cli: Cli, aws: AwsResources, intake_mapping: IntakeMapping
) -> None:
    # Given a paused intake with orders waiting
    sqs = boto3.client("sqs")
    for n in range(3):
        sqs.send_message(QueueUrl=aws.orders_queue_url, MessageBody=f'{{"n": {n}}}')
    cli.flags["--intake-function"] = intake_mapping.function_name

    # When (moto has no SQS metrics: --peek estimates the age)
    result = cli("--json", "intake", "status", "--peek")

    # Then
    assert result.code == 0, result.err
    status = result.json()
    assert status["paused"] is True
    assert status["visible"] == 3
    assert status["in_flight"] == 0
    assert status["maximum_concurrency"] == 2
    assert status["oldest_age_s"] is not None
    assert status["oldest_age_s"] >= 0
    assert status["oldest_age_source"].startswith("approximate")
    # The peek handed the messages straight back.
    attrs = sqs.get_queue_attributes(
        QueueUrl=aws.orders_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "3"


def test_status_without_peek_does_not_receive(
    cli: Cli, aws: AwsResources, intake_mapping: IntakeMapping
) -> None:
    boto3.client("sqs").send_message(QueueUrl=aws.orders_queue_url, MessageBody="{}")
    cli.flags["--intake-function"] = intake_mapping.function_name

    result = cli("intake", "status")

    assert result.code == 0, result.err
    assert "use --peek" in result.out
    message = boto3.client("sqs").receive_message(
        QueueUrl=aws.orders_queue_url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"][0]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"


def test_unknown_intake_function_exits_2(cli: Cli, aws: AwsResources) -> None:
    cli.flags["--intake-function"] = "no-such-function"

    result = cli("intake", "pause")

    assert result.code == 2
    assert "no SQS event source mapping" in result.err
    assert "no-such-function:live" in result.err
