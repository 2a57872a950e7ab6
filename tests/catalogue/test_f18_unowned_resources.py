"""F18 Unowned resources and unknown versions: every taggable resource names its service,
owner, stage and cost centre; consumers accept the current and the previous message version."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from tests.catalogue.templates import resources
from tests.fixtures import AwsResources
from tests.functions.test_handlers import CUSTOMER_A, sqs_event
from tests.infra.conftest import Synthesized

OWNERSHIP_TAGS = ("service", "owner", "stage", "cost-centre")
# The one place that says which CloudFormation types can carry tags, and under which property.
# A type in neither table fails the test until someone classifies it.
TAG_PROPERTY: dict[str, str] = {
    "AWS::ApiGateway::RestApi": "Tags",
    "AWS::ApiGateway::Stage": "Tags",
    "AWS::ApiGateway::UsagePlan": "Tags",
    "AWS::Budgets::Budget": "ResourceTags",
    "AWS::CloudWatch::Alarm": "Tags",
    "AWS::CloudWatch::Dashboard": "Tags",
    "AWS::CodeDeploy::Application": "Tags",
    "AWS::CodeDeploy::DeploymentGroup": "Tags",
    "AWS::Cognito::UserPool": "UserPoolTags",
    "AWS::DynamoDB::Table": "Tags",
    "AWS::EC2::EIP": "Tags",
    "AWS::EC2::FlowLog": "Tags",
    "AWS::EC2::InternetGateway": "Tags",
    "AWS::EC2::NatGateway": "Tags",
    "AWS::EC2::RouteTable": "Tags",
    "AWS::EC2::SecurityGroup": "Tags",
    "AWS::EC2::Subnet": "Tags",
    "AWS::EC2::VPC": "Tags",
    "AWS::EC2::VPCEndpoint": "Tags",
    "AWS::IAM::Role": "Tags",
    "AWS::KMS::Key": "Tags",
    "AWS::Lambda::EventSourceMapping": "Tags",
    "AWS::Lambda::Function": "Tags",
    "AWS::Logs::LogGroup": "Tags",
    "AWS::RDS::DBInstance": "Tags",
    "AWS::RDS::DBParameterGroup": "Tags",
    "AWS::RDS::DBProxy": "Tags",
    "AWS::RDS::DBSubnetGroup": "Tags",
    "AWS::SNS::Topic": "Tags",
    "AWS::SQS::Queue": "Tags",
    "AWS::SecretsManager::Secret": "Tags",
    "AWS::StepFunctions::StateMachine": "Tags",
    "AWS::WAFv2::WebACL": "Tags",
}
NOT_TAGGABLE = frozenset(
    {
        "AWS::ApiGateway::Authorizer",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::GatewayResponse",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Model",
        "AWS::ApiGateway::RequestValidator",
        "AWS::ApiGateway::Resource",
        "AWS::Cognito::UserPoolClient",
        "AWS::EC2::Route",
        "AWS::EC2::SecurityGroupEgress",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::SubnetRouteTableAssociation",
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::IAM::Policy",
        "AWS::Lambda::Alias",
        "AWS::Lambda::LayerVersion",
        "AWS::Lambda::Permission",
        "AWS::Lambda::Version",
        "AWS::Logs::MetricFilter",
        "AWS::RDS::DBProxyTargetGroup",
        "AWS::SNS::Subscription",
        "AWS::SNS::TopicPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::SecretsManager::ResourcePolicy",
        "AWS::SecretsManager::RotationSchedule",
        "AWS::SecretsManager::SecretTargetAttachment",
        "AWS::WAFv2::WebACLAssociation",
        "Custom::Trigger",
        "Custom::VpcRestrictDefaultSG",
    }
)


def tags_of(props: dict[str, Any] | Any, prop: str) -> dict[str, str]:
    raw = props.get(prop) or {}
    if isinstance(raw, dict):  # Cognito's UserPoolTags is a map
        return {str(k): str(v) for k, v in raw.items()}
    return {str(t["Key"]): str(t["Value"]) for t in raw}


def test_f18_every_resource_type_is_classified_as_taggable_or_not(
    stage_stack: Synthesized,
) -> None:
    """Given every resource type in the template, then it is in exactly one of the two tables,
    so a new type cannot slip past the tag check below unnoticed."""
    types = {resource["Type"] for resource in stage_stack.raw["Resources"].values()}

    assert not set(TAG_PROPERTY) & NOT_TAGGABLE
    assert types - set(TAG_PROPERTY) - NOT_TAGGABLE == set()


def test_f18_every_taggable_resource_carries_the_ownership_tags(stage_stack: Synthesized) -> None:
    """Given every resource of a taggable type, then it carries service, owner, stage and
    cost-centre with the stage config's values.

    Fails if: the stack-wide `Tags.of(...)` is removed or stops reaching a resource kind (raw
    CfnResource-based CDK providers are not reached today: the xfail above).
    """
    untagged = []
    for logical_id, resource in stage_stack.raw["Resources"].items():
        prop = TAG_PROPERTY.get(resource["Type"])
        if prop is None:
            continue
        tags = tags_of(resource.get("Properties") or {}, prop)
        expected = {key: stage_stack.config.tags[key] for key in OWNERSHIP_TAGS}
        if {key: tags.get(key) for key in OWNERSHIP_TAGS} != expected:
            untagged.append(f"{resource['Type']} {logical_id}")

    assert untagged == []


def test_f18_our_functions_queues_data_and_saga_carry_the_ownership_tags(
    stage_stack: Synthesized,
) -> None:
    """Given the resources the project defines itself (functions with our handlers, queues,
    table, database, state machine), then each carries the four tags (the part that holds
    today; the full rule above is xfail on a real bug).

    Fails if: the stack-wide tags are removed or the config's tag map loses a key.
    """
    res = resources(stage_stack)
    owned = [
        (logical_id, props)
        for logical_id, props in res.of_type(
            "AWS::SQS::Queue",
            "AWS::DynamoDB::Table",
            "AWS::RDS::DBInstance",
            "AWS::StepFunctions::StateMachine",
            "AWS::Lambda::EventSourceMapping",
        )
    ]
    owned += [
        (logical_id, props)
        for logical_id, props in res.of_type("AWS::Lambda::Function")
        if str(props.get("Handler", "")).startswith("orders_saga.")
    ]
    assert set(OWNERSHIP_TAGS) <= set(stage_stack.config.tags)
    for logical_id, props in owned:
        tags = tags_of(props, "Tags")
        for key in OWNERSHIP_TAGS:
            assert tags.get(key) == stage_stack.config.tags[key], (logical_id, key)


def v1_message() -> dict[str, Any]:
    return {
        "schema_version": "1",
        "order_id": str(uuid.uuid4()),
        "customer_id": CUSTOMER_A,
        "items": [{"sku": "SKU-PEAR", "quantity": 1}],
        "payment_method": "pm_card_visa",
        "accepted_at": datetime.now(UTC).isoformat(),
    }


def test_f18_intake_accepts_the_previous_schema_version_and_parks_an_unknown_one(
    function_env: AwsResources, lambda_context: LambdaContext
) -> None:
    """Given a schema_version "1" message (previous version, no currency) and a well-formed
    order claiming schema_version "9", when Intake processes both in one batch, then the "1"
    order starts exactly one saga (in EUR) and the "9" one is parked in the DLQ with its reason,
    and neither is retried.

    Fails if: OrderAcceptedV1 is dropped from the OrderAccepted union (the "1" message would be
    parked), or the union accepts any version (the "9" message would start a saga).
    """
    from orders_saga.handlers import intake

    previous = v1_message()
    unknown = {**v1_message(), "schema_version": "9", "currency": "EUR"}

    result = intake.handler(sqs_event(json.dumps(previous), json.dumps(unknown)), lambda_context)

    sfn = boto3.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=function_env.state_machine_arn)["executions"]
    (started,) = executions
    execution_input = json.loads(
        sfn.describe_execution(executionArn=started["executionArn"])["input"]
    )
    parked = function_env.sqs_messages(function_env.intake_dlq_url)

    assert result == {"batchItemFailures": []}
    assert started["name"] == f"order-{previous['order_id']}"
    assert execution_input["order"]["currency"] == "EUR"
    assert [json.loads(m["Body"])["order_id"] for m in parked] == [unknown["order_id"]]
    reason = parked[0]["MessageAttributes"]["failure_reason"]["StringValue"]
    assert reason.startswith("invalid message")
