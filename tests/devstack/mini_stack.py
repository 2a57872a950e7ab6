"""A small CDK-shaped template for the devstack tests (the shapes ``cdk synth`` emits).

The devstack must not depend on the real stack's code to be tested, so this stands in for it:
queues with a DLQ, a TTL table, secrets (one behind a SecretTargetAttachment, as CDK's
``cluster.secret``), functions with ``live`` aliases, an SQS event source mapping, a state
machine whose DefinitionString is a ``Fn::Join`` over alias Refs, and a REST API with a Cognito
authorizer, a request validator, a model and gateway responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.aws import LocalAws, LocalResources
from devstack.lambda_runtime import FunctionPool, LogRecord
from devstack.template import CfnTemplate

HANDLERS = Path(__file__).parent / "handlers"
STACK = "Mini"
REGION = "eu-west-1"
TRANSIENT_RETRY = {
    "ErrorEquals": ["TransientError"],
    "IntervalSeconds": 2,
    "MaxAttempts": 3,
    "BackoffRate": 2,
    "MaxDelaySeconds": 5,
    "JitterStrategy": "FULL",
}
ORDER_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "type": "object",
    "required": ["items", "currency"],
    "properties": {
        "items": {"type": "array", "minItems": 1},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
    },
}


@dataclass(frozen=True)
class FakePostgres:
    """PostgresSettings' shape; the test handlers never connect."""

    host: str = "127.0.0.1"
    port: int = 5999
    dbname: str = "orders"
    user: str = "orders_app"
    password: str = "local-pw"
    sslrootcert: str = "/tmp/devstack-test-ca.pem"


def _function(
    handler: str, *, timeout: int = 3, env: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Code": {
                "S3Bucket": {"Fn::Sub": "cdk-hnb659fds-assets-${AWS::AccountId}-${AWS::Region}"},
                "S3Key": "0123.zip",
            },
            "Handler": handler,
            "Runtime": "python3.13",
            "Timeout": timeout,
            "MemorySize": 256,
            "Role": {"Fn::GetAtt": ["FnRole", "Arn"]},
            "Environment": {"Variables": env or {}},
        },
        "Metadata": {"aws:cdk:path": f"{STACK}/{handler}/Resource"},
    }


def _with_alias(resources: dict[str, Any], name: str, fn: dict[str, Any]) -> None:
    resources[name] = fn
    resources[f"{name}CurrentVersionAB12"] = {
        "Type": "AWS::Lambda::Version",
        "Properties": {"FunctionName": {"Ref": name}},
    }
    resources[f"{name}Alias"] = {
        "Type": "AWS::Lambda::Alias",
        "Properties": {
            "FunctionName": {"Ref": name},
            "FunctionVersion": {"Fn::GetAtt": [f"{name}CurrentVersionAB12", "Version"]},
            "Name": "live",
        },
    }


def _definition() -> dict[str, Any]:
    head = {
        "StartAt": "ReserveInventory",
        "States": {
            "ReserveInventory": {
                "Type": "Task",
                "Resource": "@RESERVE@",
                "ResultPath": "$.reservation",
                "Retry": [TRANSIENT_RETRY],
                "Catch": [
                    {
                        "ErrorEquals": ["States.ALL"],
                        "ResultPath": "$.error",
                        "Next": "ReleaseInventory",
                    }
                ],
                "Next": "OrderConfirmed",
            },
            "ReleaseInventory": {
                "Type": "Task",
                "Resource": "arn:@PARTITION@:states:::lambda:invoke",
                "Parameters": {
                    "FunctionName": "@RELEASE@",
                    "Payload": {"order.$": "$.order", "error.$": "$.error"},
                },
                "ResultSelector": {"released.$": "$.Payload"},
                "ResultPath": "$.release",
                "Next": "EscalateToHuman",
            },
            "EscalateToHuman": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage",
                "Parameters": {"QueueUrl": "@ATTENTION@", "MessageBody.$": "$.order"},
                "Next": "OrderFailed",
            },
            "OrderFailed": {"Type": "Fail", "Error": "OrderFailed"},
            "OrderConfirmed": {"Type": "Succeed"},
        },
    }
    # CDK emits the ASL as a Fn::Join of literal pieces and tokens: rebuild that shape.
    text = json.dumps(head, separators=(",", ":"))
    tokens = {
        "@RESERVE@": {"Ref": "ReserveAlias"},
        "@RELEASE@": {"Ref": "ReleaseAlias"},
        "@ATTENTION@": {"Ref": "AttentionQueue"},
        "@PARTITION@": {"Ref": "AWS::Partition"},
    }
    pieces: list[Any] = []
    while text:
        positions = [(text.find(t), t) for t in tokens if t in text]
        if not positions:
            pieces.append(text)
            break
        index, token = min(positions)
        pieces.extend([text[:index], tokens[token]])
        text = text[index + len(token) :]
    return {"Fn::Join": ["", pieces]}


def template_body() -> dict[str, Any]:
    r: dict[str, Any] = {
        "FnRole": {"Type": "AWS::IAM::Role", "Properties": {}},
        "OrdersDlq": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True},
        },
        "OrdersQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "VisibilityTimeout": 30,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["OrdersDlq", "Arn"]},
                    "maxReceiveCount": 3,
                },
            },
        },
        "AttentionQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "IdemTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
                "TimeToLiveSpecification": {"AttributeName": "expiration", "Enabled": True},
            },
        },
        "DbSecret": {
            "Type": "AWS::SecretsManager::Secret",
            "Properties": {
                "GenerateSecretString": {
                    "SecretStringTemplate": '{"username":"master"}',
                    "GenerateStringKey": "password",
                }
            },
        },
        "DbSecretAttachment": {
            "Type": "AWS::SecretsManager::SecretTargetAttachment",
            "Properties": {"SecretId": {"Ref": "DbSecret"}, "TargetType": "AWS::RDS::DBCluster"},
        },
        "PaymentKey": {"Type": "AWS::SecretsManager::Secret", "Properties": {}},
        "IntakeEsm": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {
                # CDK's shape for a mapping on an alias: "<function name>:live".
                "FunctionName": {
                    "Fn::Join": [
                        "",
                        [
                            {"Fn::Select": [6, {"Fn::Split": [":", {"Ref": "IntakeAlias"}]}]},
                            ":live",
                        ],
                    ]
                },
                "EventSourceArn": {"Fn::GetAtt": ["OrdersQueue", "Arn"]},
                "BatchSize": 5,
                "MaximumBatchingWindowInSeconds": 0,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": 2},
            },
        },
        "Saga": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "DefinitionString": _definition(),
                "RoleArn": {"Fn::GetAtt": ["SagaRole", "Arn"]},
            },
        },
        "Pool": {
            "Type": "AWS::Cognito::UserPool",
            "Properties": {"UsernameAttributes": ["email"], "AutoVerifiedAttributes": ["email"]},
        },
        "PoolClient": {
            "Type": "AWS::Cognito::UserPoolClient",
            "Properties": {
                "UserPoolId": {"Ref": "Pool"},
                "ExplicitAuthFlows": ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
            },
        },
        **_api(),
    }
    _with_alias(
        r,
        "Reserve",
        _function(
            "saga_probe.reserve",
            env={
                "IDEMPOTENCY_TABLE": {"Ref": "IdemTable"},
                "DB_HOST": {"Fn::GetAtt": ["Proxy", "Endpoint"]},  # not created locally
                "DB_SSLMODE": "verify-full",
                "STAGE": "dev",
            },
        ),
    )
    _with_alias(
        r,
        "Release",
        _function(
            "saga_probe.release",
            env={
                "PAYMENT_API_URL": "https://payments.example.com",
                "PAYMENT_API_KEY_SECRET_ARN": {"Ref": "PaymentKey"},
            },
        ),
    )
    _with_alias(
        r,
        "Intake",
        _function(
            "saga_probe.intake",
            timeout=10,
            env={
                "STATE_MACHINE_ARN": {"Ref": "Saga"},
                "INTAKE_DLQ_URL": {"Ref": "OrdersDlq"},
                "DB_SECRET_ARN": {"Ref": "DbSecretAttachment"},
            },
        ),
    )
    _with_alias(
        r,
        "Api",
        _function(
            "api_probe.handler",
            env={
                "ORDERS_QUEUE_URL": {"Ref": "OrdersQueue"},
                "IDEMPOTENCY_TABLE": {"Ref": "IdemTable"},
            },
        ),
    )
    return {
        "Parameters": {"BootstrapVersion": {"Type": "String", "Default": "/cdk-bootstrap/version"}},
        "Resources": r,
    }


def _api() -> dict[str, Any]:
    integration_uri = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":apigateway:",
                {"Ref": "AWS::Region"},
                ":lambda:path/2015-03-31/functions/",
                {"Ref": "ApiAlias"},
                "/invocations",
            ],
        ]
    }
    return {
        "RestApi": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "orders"}},
        "RestApiOrders": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {
                "ParentId": {"Fn::GetAtt": ["RestApi", "RootResourceId"]},
                "PathPart": "orders",
                "RestApiId": {"Ref": "RestApi"},
            },
        },
        "RestApiOrderById": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {
                "ParentId": {"Ref": "RestApiOrders"},
                "PathPart": "{order_id}",
                "RestApiId": {"Ref": "RestApi"},
            },
        },
        "Authorizer": {
            "Type": "AWS::ApiGateway::Authorizer",
            "Properties": {
                "Type": "COGNITO_USER_POOLS",
                "IdentitySource": "method.request.header.Authorization",
                "ProviderARNs": [{"Fn::GetAtt": ["Pool", "Arn"]}],
                "RestApiId": {"Ref": "RestApi"},
            },
        },
        "Validator": {
            "Type": "AWS::ApiGateway::RequestValidator",
            "Properties": {
                "RestApiId": {"Ref": "RestApi"},
                "ValidateRequestBody": True,
                "ValidateRequestParameters": True,
            },
        },
        "OrderModel": {
            "Type": "AWS::ApiGateway::Model",
            "Properties": {
                "ContentType": "application/json",
                "RestApiId": {"Ref": "RestApi"},
                "Schema": ORDER_SCHEMA,
            },
        },
        "PostOrders": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "HttpMethod": "POST",
                "ResourceId": {"Ref": "RestApiOrders"},
                "RestApiId": {"Ref": "RestApi"},
                "AuthorizationType": "COGNITO_USER_POOLS",
                "AuthorizerId": {"Ref": "Authorizer"},
                "RequestParameters": {"method.request.header.Idempotency-Key": True},
                "RequestValidatorId": {"Ref": "Validator"},
                "RequestModels": {"application/json": {"Ref": "OrderModel"}},
                "Integration": {
                    "Type": "AWS_PROXY",
                    "IntegrationHttpMethod": "POST",
                    "Uri": integration_uri,
                },
            },
        },
        "GetOrder": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "HttpMethod": "GET",
                "ResourceId": {"Ref": "RestApiOrderById"},
                "RestApiId": {"Ref": "RestApi"},
                "AuthorizationType": "COGNITO_USER_POOLS",
                "AuthorizerId": {"Ref": "Authorizer"},
                "Integration": {
                    "Type": "AWS_PROXY",
                    "IntegrationHttpMethod": "POST",
                    "Uri": integration_uri,
                },
            },
        },
        "BadBodyResponse": {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {
                "ResponseType": "BAD_REQUEST_BODY",
                "RestApiId": {"Ref": "RestApi"},
                "StatusCode": "400",
                "ResponseTemplates": {
                    "application/json": (
                        '{"message": $context.error.messageString, '
                        '"details": "$context.error.validationErrorString", '
                        '"requestId": "$context.requestId"}'
                    )
                },
                "ResponseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": "'*'"},
            },
        },
        "BadParamsResponse": {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {
                "ResponseType": "BAD_REQUEST_PARAMETERS",
                "RestApiId": {"Ref": "RestApi"},
                "StatusCode": "400",
                "ResponseTemplates": {
                    "application/json": '{"message": $context.error.messageString}'
                },
            },
        },
        "Stage": {
            "Type": "AWS::ApiGateway::Stage",
            "Properties": {"RestApiId": {"Ref": "RestApi"}, "StageName": "dev"},
        },
    }


@dataclass
class RunningStack:
    aws: LocalAws
    resources: LocalResources
    pools: dict[str, FunctionPool]  # function logical id -> pool
    logs: list[LogRecord]
    messages: list[str]


@contextmanager
def running_stack() -> Iterator[RunningStack]:
    """LocalAws from the mini template, one worker pool per function, routed for Step Functions."""
    template = CfnTemplate(template_body(), stack_name=STACK, region=REGION)
    logs: list[LogRecord] = []
    messages: list[str] = []
    aws = LocalAws(
        template,
        postgres=FakePostgres(),
        payment_api_url="http://127.0.0.1:9/",
        code_root=HANDLERS,
        say=messages.append,
    )
    with aws as resources:
        pools = {
            lid: FunctionPool(fn.config, log_sink=logs.append)
            for lid, fn in resources.functions.items()
        }
        for lid, pool in pools.items():
            aws.route_lambda(resources.functions[lid].name, pool)
        try:
            yield RunningStack(aws, resources, pools, logs, messages)
        finally:
            for pool in pools.values():
                pool.stop()
