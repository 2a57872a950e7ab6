"""`ServiceStack`: wires the constructs; every number comes from the StageConfig."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from infra import guardrails
from infra.api import Api
from infra.bundling import code_asset, dependencies_layer
from infra.config import SAGA_STEPS, StageConfig
from infra.data import Database
from infra.deployments import Deployments
from infra.functions import FunctionAssets, HardenedFunction
from infra.idempotency import IdempotencyTable
from infra.intake import connect_intake
from infra.monitoring import Monitoring
from infra.nag import acknowledge
from infra.network import FUNCTION_SUBNETS, Network
from infra.queues import Queues
from infra.saga import OrderSaga, saga_log_settings

UNTAGGABLE = ["AWS::RDS::DBProxyTargetGroup"]
# Node.js provider functions CDK creates and owns (one invocation per deploy, no traffic).
CDK_PROVIDERS = {
    "AWSCDK.TriggerCustomResourceProviderCustomResourceProvider": "runs the Migrate trigger",
    "Custom::VpcRestrictDefaultSGCustomResourceProvider": "strips the VPC default SG's rules",
}
PAYMENT_STEPS = frozenset({"TakePayment", "RefundPayment"})
# Exactly what Powertools' DynamoDB persistence layer calls (F20: no Scan/Query/Batch*).
IDEMPOTENCY_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
)


class ServiceStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        for key, value in config.tags.items():  # F18
            # The DB proxy target group takes no tags (CloudFormation schema, F3002).
            cdk.Tags.of(self).add(key, value, exclude_resource_types=UNTAGGABLE)

        network = Network(self, "Network", config=config)
        vpc = network.vpc
        assets = FunctionAssets(code=code_asset(), layer=dependencies_layer(self, "Deps"))
        idempotency = IdempotencyTable(self, "Idempotency", config=config)
        database = Database(self, "Database", config=config, vpc=vpc, assets=assets)
        queues = Queues(
            self, "Queues", config=config, intake_timeout=config.function("Intake").timeout
        )
        payment_key = secretsmanager.Secret(
            self,
            "PaymentApiKey",
            description="Payment provider API key; the value is set by the operator (runbook)",
            removal_policy=config.removal_policy,
        )

        idempotency_env = {
            "IDEMPOTENCY_TABLE": idempotency.table.table_name,
            "IDEMPOTENCY_TTL_S": str(config.idempotency_ttl_s),
        }
        payment = config.payment
        payment_env = {
            "PAYMENT_API_URL": payment.api_url,
            "PAYMENT_API_KEY_SECRET_ARN": payment_key.secret_arn,
            "PAYMENT_CONNECT_TIMEOUT_S": str(payment.connect_timeout_s),
            "PAYMENT_READ_TIMEOUT_S": str(payment.read_timeout_s),
            "PAYMENT_BREAKER_FAIL_MAX": str(payment.breaker_fail_max),
            "PAYMENT_BREAKER_RESET_S": str(payment.breaker_reset_s),
        }

        def db_function(
            name: str,
            extra: dict[str, str] | None = None,
            *,
            idempotent: bool,
            provisioned_concurrency: int = 0,
        ) -> HardenedFunction:
            """``idempotent``: keeps Powertools idempotency records (Api, Intake). The saga
            steps do not: their side effects are idempotent underneath (ADR 0012), so they get
            neither the table nor its grant (F20)."""
            fn = HardenedFunction(
                self,
                name,
                config=config,
                assets=assets,
                vpc=vpc,
                vpc_subnets=FUNCTION_SUBNETS,
                environment={
                    **(idempotency_env if idempotent else {}),
                    **database.environment(),
                    **(extra or {}),
                },
                provisioned_concurrency=provisioned_concurrency,
            )
            database.grant_connect(fn)
            if idempotent:
                idempotency.table.grant(fn.function, *IDEMPOTENCY_ACTIONS)
            return fn

        # Api: DynamoDB idempotency, PostgreSQL, orders queue. F04: warm environments behind
        # its alias where the stage pays for them (prod).
        api_fn = db_function(
            "Api",
            {"ORDERS_QUEUE_URL": queues.orders_queue.queue_url},
            idempotent=True,
            provisioned_concurrency=config.api.provisioned_concurrency,
        )
        # F20: SendMessage only. grant_send_messages adds GetQueueAttributes and GetQueueUrl,
        # which the handler never calls (it has the URL); the queues use SQS-managed SSE, so
        # no KMS grant either (tests/catalogue/test_f20_least_privilege.py).
        queues.orders_queue.grant(api_fn.function, "sqs:SendMessage")

        # Intake: records the order row when the message did not come through the API
        # (ADR 0004), so it is a database user like the steps.
        intake_fn = db_function(
            "Intake", {"INTAKE_DLQ_URL": queues.orders_dlq.queue_url}, idempotent=True
        )
        queues.orders_dlq.grant(intake_fn.function, "sqs:SendMessage")  # F20, as for Api
        connect_intake(intake_fn, queues.orders_queue, config=config)

        steps: dict[str, HardenedFunction] = {}
        for name in SAGA_STEPS:
            steps[name] = db_function(
                name, payment_env if name in PAYMENT_STEPS else None, idempotent=False
            )
            if name in PAYMENT_STEPS:
                # F20: GetSecretValue only (grant_read adds DescribeSecret, never called).
                iam.Grant.add_to_principal(
                    grantee=steps[name].function,
                    actions=["secretsmanager:GetSecretValue"],
                    resource_arns=[payment_key.secret_arn],
                )

        self.saga = OrderSaga(
            self,
            "Saga",
            config=config,
            steps={name: fn.alias for name, fn in steps.items()},
            needs_attention_queue=queues.needs_attention,
        )
        intake_fn.add_environment("STATE_MACHINE_ARN", self.saga.state_machine.state_machine_arn)
        self.saga.state_machine.grant_start_execution(intake_fn.function)

        self.api = Api(self, "PublicApi", config=config, handler=api_fn.alias)

        guardrails.mark_terminal_queue(
            queues.needs_attention,
            "F08: the end of the line for failed compensations; an operator drains it "
            "(runbook), nothing consumes it automatically",
        )

        self.functions: dict[str, HardenedFunction] = {
            "Api": api_fn,
            "Intake": intake_fn,
            **steps,
            "Migrate": database.migrate,
        }
        self.network = network
        self.database = database
        self.queues = queues
        self.idempotency = idempotency
        self.payment_key = payment_key

        # -- monitoring (issue 4, docs/operations-contract.md) ---------------------------
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            functions=self.functions,
            queues=queues,
            state_machine=self.saga.state_machine,
            proxy=database.proxy,
            rest_api=self.api.rest_api,
            stage_name=self.api.rest_api.deployment_stage.stage_name,
        )
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        # -- end monitoring ------------------------------------------------------------------

        # -- deployments (F12: CodeDeploy per alias, pre-traffic hook, rollback alarms) -----
        self.deployments = Deployments(
            self,
            "Deployments",
            config=config,
            functions=self.functions,
            assets=assets,
            extra_rollback_alarms=[self.monitoring.saga_failure_alarm],
            alarm_topic=self.monitoring.topic,
        )
        # The hook exists only now; it gets the same per-function alarms as every function.
        self.monitoring.watch_function(self.deployments.hook)
        # -- end deployments -----------------------------------------------------------------

        self._add_outputs()
        self._acknowledge_cdk_providers()
        acknowledge(
            payment_key,
            {
                "AwsSolutions-SMG4": "F14: a third-party API key; only the payment provider can "
                "issue a new one, so rotation is the manual runbook step, not a Lambda",
            },
        )
        if saga_log_settings(config)[0] != sfn.LogLevel.ALL:
            acknowledge(
                self.saga.state_machine,
                {
                    "AwsSolutions-SF1": f"{config.name}: execution logs keep ERROR events only; "
                    "the state carries customer and payment data (infra/saga.py) and X-Ray "
                    "traces every execution (F13)",
                },
            )
        acknowledge(
            self.saga.state_machine,
            {
                "AwsSolutions-IAM5[Resource::*]": "X-Ray PutTraceSegments/PutTelemetryRecords "
                "and CloudWatch Logs vended delivery (logs:*LogDelivery*) support no "
                "resource-level permissions",
            },
        )

    def _add_outputs(self) -> None:
        for name, fn in self.functions.items():
            cdk.CfnOutput(self, f"{name}FunctionName", value=fn.function.function_name)
        cdk.CfnOutput(self, "ApiUrl", value=self.api.rest_api.url)
        cdk.CfnOutput(self, "UserPoolId", value=self.api.user_pool.user_pool_id)
        cdk.CfnOutput(self, "UserPoolClientId", value=self.api.client.user_pool_client_id)
        cdk.CfnOutput(self, "OrdersQueueUrl", value=self.queues.orders_queue.queue_url)
        cdk.CfnOutput(self, "OrdersDlqUrl", value=self.queues.orders_dlq.queue_url)
        cdk.CfnOutput(self, "NeedsAttentionQueueUrl", value=self.queues.needs_attention.queue_url)
        cdk.CfnOutput(self, "StateMachineArn", value=self.saga.state_machine.state_machine_arn)
        cdk.CfnOutput(self, "IdempotencyTableName", value=self.idempotency.table.table_name)

    def _acknowledge_cdk_providers(self) -> None:
        for provider_id, purpose in CDK_PROVIDERS.items():
            provider = self.node.try_find_child(provider_id)
            handler = provider.node.try_find_child("Handler") if provider else None
            if handler is None or provider is None:
                continue
            self._tag_raw_resources(provider)
            why = f"CDK-owned provider that {purpose}, once per deploy, CloudFormation only"
            guardrails.acknowledge(
                handler,
                {
                    "F05": f"{why}; CloudFormation calls it serially, it cannot fan out",
                    "F13": f"{why}; its outcome is the stack event, CDK sets its logging",
                    "F22": f"{why}; no event source, so no loop to terminate",
                },
            )

    def _tag_raw_resources(self, scope: IConstruct) -> None:
        """F18: CDK's provider function and role are raw CfnResources, which ``Tags.of`` does
        not reach; give them the ownership tags by property override."""
        tags = [{"Key": key, "Value": value} for key, value in sorted(self.config.tags.items())]
        for child in scope.node.find_all():
            if isinstance(child, cdk.CfnResource) and child.cfn_resource_type in {
                "AWS::Lambda::Function",
                "AWS::IAM::Role",
            }:
                child.add_property_override("Tags", tags)

    @property
    def aliases(self) -> dict[str, lambda_.IAlias]:
        return {name: fn.alias for name, fn in self.functions.items()}

    def roles(self) -> dict[str, iam.IRole | None]:
        return {name: fn.function.role for name, fn in self.functions.items()}
