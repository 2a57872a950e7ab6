"""The public edge: Cognito, a REST API that validates before it invokes (F05, F11, F13)."""

from __future__ import annotations

import json
import sys
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.bundling import FUNCTIONS_DIR
from infra.config import StageConfig
from infra.nag import acknowledge

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Clear 4xx bodies (F11): what failed and, for model errors, why.
ERROR_TEMPLATE = (
    '{"message": $context.error.messageString, "reason": "$context.error.validationErrorString"}'
)
# The DEFAULT_ types cover every other gateway answer (throttled, too large, missing route,
# WAF, integration failures): one error shape for every refusal, the function's included.
ERROR_RESPONSES = (
    apigw.ResponseType.BAD_REQUEST_BODY,
    apigw.ResponseType.BAD_REQUEST_PARAMETERS,
    apigw.ResponseType.UNAUTHORIZED,
    apigw.ResponseType.ACCESS_DENIED,
    apigw.ResponseType.DEFAULT_4_XX,
    apigw.ResponseType.DEFAULT_5_XX,
)
# F13: one JSON line per request; requestId and the caller's sub correlate with the function's
# logs, the X-Ray trace id with the trace.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "extendedRequestId": "$context.extendedRequestId",
    "xrayTraceId": "$context.xrayTraceId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "sub": "$context.authorizer.claims.sub",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integration.latency",
    "integrationStatus": "$context.integration.status",
    "errorMessage": "$context.error.message",
    "validationError": "$context.error.validationErrorString",
}


def place_order_schema() -> dict[str, Any]:
    """The request model, generated from the function's pydantic model (one source, F11)."""
    if str(FUNCTIONS_DIR) not in sys.path:
        sys.path.append(str(FUNCTIONS_DIR))
    from orders_saga.api_schema import place_order_json_schema  # noqa: PLC0415

    return place_order_json_schema()


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        handler: lambda_.IAlias,
    ) -> None:
        super().__init__(scope, construct_id)
        protect = config.removal_policy != RemovalPolicy.DESTROY
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.ESSENTIALS,
            deletion_protection=protect,
            removal_policy=config.removal_policy,
        )
        acknowledge(
            self.user_pool,
            {
                "AwsSolutions-COG2": "MFA is optional (TOTP) because API clients are services "
                "signing in with ADMIN_USER_PASSWORD_AUTH; no self sign-up, 12-char policy",
                "AwsSolutions-COG8": "no self sign-up, admin-created service users only: "
                "Plus-tier threat protection (priced per MAU) adds little; WAF guards the API",
            },
        )
        self.client = self.user_pool.add_client(
            "Client",
            auth_flows=cognito.AuthFlow(admin_user_password=True, user_srp=True),
            generate_secret=False,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(1),
        )
        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=config.log_retention,
            removal_policy=config.removal_policy,
        )
        throttle = config.api
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            description=f"{config.service} API ({config.name})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-wide API Gateway logging role is not this stack's to own.
            cloud_watch_role=False,
            deploy_options=apigw.StageOptions(
                stage_name=config.name,
                tracing_enabled=True,  # F13
                metrics_enabled=True,
                data_trace_enabled=False,  # never log request bodies
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
                # F05: every method, below the account-level limit.
                throttling_rate_limit=throttle.throttle_rate_limit,
                throttling_burst_limit=throttle.throttle_burst_limit,
            ),
        )
        acknowledge(
            self.rest_api.deployment_stage,
            {
                "AwsSolutions-APIG6": "execution logging needs the account-wide API Gateway "
                "CloudWatch role, which this stack does not own; JSON access logs record every "
                "request and X-Ray traces each one (F13)",
            },
        )
        self._add_web_acl(config)
        for response_type in ERROR_RESPONSES:
            self.rest_api.add_gateway_response(
                response_type.response_type,
                type=response_type,
                templates={"application/json": ERROR_TEMPLATE},
            )

        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[self.user_pool]
        )
        validator = self.rest_api.add_request_validator(
            "BodyAndParameters",
            validate_request_body=True,
            validate_request_parameters=True,
        )
        model = self.rest_api.add_model(
            "PlaceOrderModel",
            content_type="application/json",
            model_name="PlaceOrderRequest",
            # Placeholder replaced below by the generated draft-4 schema, which the typed
            # JsonSchema class cannot express losslessly.
            schema=apigw.JsonSchema(
                schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT
            ),
        )
        cfn_model = model.node.default_child
        assert isinstance(cfn_model, apigw.CfnModel)
        cfn_model.add_property_override("Schema", place_order_schema())

        integration = apigw.LambdaIntegration(handler, proxy=True, allow_test_invoke=False)
        method_options: dict[str, Any] = {
            "authorization_type": apigw.AuthorizationType.COGNITO,
            "authorizer": authorizer,
            "request_validator": validator,
        }
        orders = self.rest_api.root.add_resource("orders")
        # F01: the client's retry key is mandatory at the edge.
        self.post_order = orders.add_method(
            "POST",
            integration,
            request_parameters={f"method.request.header.{IDEMPOTENCY_HEADER}": True},
            request_models={"application/json": model},
            **method_options,
        )
        order = orders.add_resource("{order_id}")
        self.get_order = order.add_method(
            "GET",
            integration,
            request_parameters={"method.request.path.order_id": True},
            **method_options,
        )

        # F05: the quota and throttle per client; the stage throttle above is the hard bound.
        self.usage_plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            description=f"{config.service} {config.name} clients",
            throttle=apigw.ThrottleSettings(
                rate_limit=throttle.throttle_rate_limit,
                burst_limit=throttle.throttle_burst_limit,
            ),
            quota=apigw.QuotaSettings(limit=throttle.quota_limit, period=throttle.quota_period),
            api_stages=[
                apigw.UsagePlanPerApiStage(api=self.rest_api, stage=self.rest_api.deployment_stage)
            ],
        )

    def _add_web_acl(self, config: StageConfig) -> None:
        """AWS managed rule groups plus a per-IP rate limit in front of the stage (F05, F11)."""

        def managed(name: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS", name=name
                    )
                ),
                visibility_config=_visibility(name),
            )

        rate_limit = wafv2.CfnWebACL.RuleProperty(
            name="RatePerIp",
            priority=0,
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    # Per source IP per 5 minutes: a fifth of the stage-wide rate.
                    limit=max(100, config.api.throttle_rate_limit * 300 // 5),
                    aggregate_key_type="IP",
                )
            ),
            visibility_config=_visibility("RatePerIp"),
        )
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(f"{config.service}-api"),
            rules=[
                rate_limit,
                managed("AWSManagedRulesCommonRuleSet", 1),
                managed("AWSManagedRulesKnownBadInputsRuleSet", 2),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.rest_api.deployment_stage.stage_arn,
            web_acl_arn=self.web_acl.attr_arn,
        )


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True,
        metric_name=metric_name,
        sampled_requests_enabled=True,
    )
