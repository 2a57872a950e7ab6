"""The command line itself: the public parser, option placement, stack outputs, exit codes."""

from __future__ import annotations

import json

import boto3
import pytest

from infra.service import this_service
from ops.cli import build_parser
from tests.fixtures import AwsResources
from tests.ops.conftest import Cli

DEV_STACK = this_service().stack("dev")


@pytest.mark.parametrize(
    "command",
    [
        "dlq inspect orders-dlq",
        "dlq inspect needs-attention --samples 5",
        "dlq redrive orders-dlq --max 10 --rate 5",
        "saga show 3f1c2a9e-7b4d-4c55-9a8e-0d6f5b2c1a77",
        "saga redrive 3f1c2a9e-7b4d-4c55-9a8e-0d6f5b2c1a77 --force",
        "intake pause",
        "intake resume",
        "intake status --peek",
        f"--stack {DEV_STACK} --json intake status",
    ],
)
def test_contract_commands_parse(command: str) -> None:
    # docs/operations-contract.md lists these; runbooks print them.
    build_parser().parse_args(command.split())


def test_global_options_work_after_the_subcommand_too() -> None:
    args = build_parser().parse_args(
        ["--stack", DEV_STACK, "dlq", "inspect", "orders-dlq", "--json", "--region", "x"]
    )

    assert (args.stack, args.json, args.region) == (DEV_STACK, True, "x")


def test_redrive_help_explains_max_and_idempotency(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dlq", "redrive", "--help"])

    text = capsys.readouterr().out
    assert "StartMessageMoveTask cannot stop after N messages" in text
    assert "idempotent" in text


def test_bad_usage_returns_2(cli: Cli) -> None:
    assert cli("dlq", "redrive", "orders-dlq", "--rate", "0").code == 2
    assert cli("frobnicate").code == 2


def test_missing_resource_names_the_flag(aws: AwsResources) -> None:
    cli = Cli(aws)
    cli.flags = {}

    result = cli("dlq", "inspect", "orders-dlq")

    assert result.code == 2
    assert "pass --orders-dlq-url" in result.err


def test_resources_come_from_the_stack_outputs(aws: AwsResources) -> None:
    # Given a stack whose outputs carry the names infra/stack.py declares
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {
            "OrdersDlqUrl": {"Value": aws.intake_dlq_url},
            "NeedsAttentionQueueUrl": {"Value": aws.needs_attention_queue_url},
        },
    }
    boto3.client("cloudformation").create_stack(
        StackName="stack-under-test", TemplateBody=json.dumps(template)
    )
    cli = Cli(aws)
    cli.flags = {}

    # When
    result = cli("--stack", "stack-under-test", "--json", "dlq", "inspect", "orders-dlq")

    # Then
    assert result.code == 0, result.err
    assert result.json()["url"] == aws.intake_dlq_url


def test_unknown_stack_exits_2(aws: AwsResources) -> None:
    cli = Cli(aws)
    cli.flags = {}

    result = cli("--stack", "NoSuchStack", "dlq", "inspect", "orders-dlq")

    assert result.code == 2
    assert "stack NoSuchStack not found" in result.err
