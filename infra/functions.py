"""`HardenedFunction`: every Lambda function of the service is built here, the same way.

Grants are not made here: the construct that owns a resource grants exactly what a function
needs with `grant_*` (F20), so no function starts with more than its basic execution role.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import (
    LAMBDA_ARCHITECTURE,
    LAMBDA_PYTHON_VERSION,
    LAMBDA_RUNTIME,
    LAMBDA_RUNTIME_MANAGEMENT,
    METRICS_NAMESPACE,
    StageConfig,
)
from infra.nag import acknowledge

# docs/architecture.md: one handler module per logical function.
HANDLERS: Mapping[str, str] = {
    "Api": "orders_saga.handlers.api.handler",
    "Intake": "orders_saga.handlers.intake.handler",
    "ReserveInventory": "orders_saga.handlers.reserve_inventory.handler",
    "TakePayment": "orders_saga.handlers.take_payment.handler",
    "ConfirmOrder": "orders_saga.handlers.confirm_order.handler",
    "RefundPayment": "orders_saga.handlers.refund_payment.handler",
    "ReleaseInventory": "orders_saga.handlers.release_inventory.handler",
    "MarkOrderFailed": "orders_saga.handlers.mark_order_failed.handler",
    "Migrate": "orders_saga.handlers.migrate.handler",
    "PreTrafficHook": "orders_saga.handlers.pre_traffic_hook.handler",
}
LIVE_ALIAS = "live"
HTTPS = ec2.Port.tcp(443)


@dataclass(frozen=True)
class FunctionAssets:
    """Shared by every function: one code upload and one dependencies layer (F04, F16)."""

    code: lambda_.Code
    layer: lambda_.ILayerVersion


def base_environment(config: StageConfig) -> dict[str, str]:
    """Variables every function reads (docs/architecture.md)."""
    sdk = config.aws_sdk
    return {
        "STAGE": config.name,
        "POWERTOOLS_SERVICE_NAME": config.service,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": config.log_level,
        # F03/F07: botocore bounds, read by orders_saga/config.py.
        "AWS_CONNECT_TIMEOUT_S": str(sdk.connect_timeout_s),
        "AWS_READ_TIMEOUT_S": str(sdk.read_timeout_s),
        "AWS_MAX_ATTEMPTS": str(sdk.max_attempts),
        # F04: pydantic otherwise scans every installed distribution's entry points for
        # plugins when the first model is built (importlib.metadata, ~8 ms of a cold start on
        # the CI machine); we ship no pydantic plugin.
        "PYDANTIC_DISABLE_PLUGINS": "__all__",
    }


class HardenedFunction(Construct):
    """A function plus its log group and `live` alias; in the VPC when `vpc` is given.

    Callers wire triggers to `alias`, never to `function`: versions and aliases are what a
    canary shifts between (F12).
    """

    def __init__(
        self,
        scope: Construct,
        logical_name: str,
        *,
        config: StageConfig,
        assets: FunctionAssets,
        environment: Mapping[str, str] | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        provisioned_concurrency: int = 0,
    ) -> None:
        """`provisioned_concurrency` > 0 keeps that many environments warm behind `live`
        (F04). It is set on the alias, not a version, so it follows whatever version(s) the
        alias routes to while CodeDeploy shifts it (F12)."""
        super().__init__(scope, logical_name)
        settings = config.function(logical_name)
        self.logical_name = logical_name
        # F13: an explicit group, so retention is ours and no log-retention custom resource
        # Lambda is needed.
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        # F20: our own role instead of the AWS managed execution-role policies, whose log
        # permissions cover every log group in the account. Only this function's group here.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{config.service} {logical_name} ({config.name})",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.security_group: ec2.SecurityGroup | None = None
        if vpc is not None:
            # Lambda creates the function's ENIs with its role; EC2 offers no resource-level
            # scoping for these actions (same as AWSLambdaVPCAccessExecutionRole).
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            )
            # Egress is opened per destination: HTTPS here (AWS APIs via endpoints or NAT,
            # the payment provider); the database port by the data construct's grant.
            self.security_group = ec2.SecurityGroup(
                self,
                "SecurityGroup",
                vpc=vpc,
                description=f"{logical_name} function",
                allow_all_outbound=False,
            )
            self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), HTTPS, "HTTPS APIs")
        self.function = lambda_.Function(
            self,
            "Function",
            description=f"{config.service} {logical_name} ({config.name})",
            code=assets.code,
            layers=[assets.layer],
            handler=HANDLERS[logical_name],
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            runtime_management_mode=LAMBDA_RUNTIME_MANAGEMENT,  # F16
            memory_size=settings.memory_mb,  # F04/F21
            timeout=settings.timeout,  # F07
            reserved_concurrent_executions=settings.reserved_concurrency,  # F05/F06
            tracing=lambda_.Tracing.ACTIVE,  # F13
            logging_format=lambda_.LoggingFormat.JSON,  # F13
            application_log_level_v2=lambda_.ApplicationLogLevel[config.log_level],
            # INFO keeps the platform.report line (duration, maxMemoryUsedMB) that the F21
            # memory alarm and the runbooks' queries read; it is one line per invocation.
            system_log_level_v2=lambda_.SystemLogLevel.INFO,
            log_group=self.log_group,
            role=self.role,
            recursive_loop=lambda_.RecursiveLoop.TERMINATE,  # F22
            environment={**base_environment(config), **(environment or {})},
            vpc=vpc,
            vpc_subnets=vpc_subnets if vpc is not None else None,
            security_groups=[self.security_group] if self.security_group else None,
        )
        acknowledge(
            self,
            {
                "AwsSolutions-L1": f"F16: pinned to Python {LAMBDA_PYTHON_VERSION}, the "
                "interpreter the tests and the layer are built with; upgrades go through "
                "infra/config.py",
                "AwsSolutions-IAM5[Resource::*]": "X-Ray PutTraceSegments/PutTelemetryRecords and "
                "the VPC ENI actions support no resource-level permissions; everything else "
                "this role gets is granted per resource (F20)",
            },
        )
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LIVE_ALIAS,
            version=self.function.current_version,
            provisioned_concurrent_executions=provisioned_concurrency or None,
        )

    def add_environment(self, name: str, value: str) -> None:
        self.function.add_environment(name, value)
