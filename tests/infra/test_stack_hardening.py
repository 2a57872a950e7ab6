"""Hardening properties of the synthesized stacks (both stages), read from the templates.

Each test states one property that must hold for every resource of its kind; none counts
resources. Numbers are compared with infra/config.py, the single source of stage settings.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.api import IDEMPOTENCY_HEADER, place_order_schema
from infra.config import (
    DLQ_RETENTION,
    LAMBDA_PYTHON_VERSION,
    ConnectionBudgetExceededError,
    FunctionSettings,
    connection_budget,
    saga_execution_timeout_s,
    stage_config,
)
from infra.functions import HANDLERS, LIVE_ALIAS
from tests.infra.conftest import STAGES, Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]
LOGICAL_NAME_BY_HANDLER = {handler: name for name, handler in HANDLERS.items()}


def our_functions(stack: Synthesized) -> dict[str, dict[str, Any]]:
    """Logical function name -> template resource, for the service's functions."""
    found = {}
    for resource in stack.resources("AWS::Lambda::Function").values():
        name = LOGICAL_NAME_BY_HANDLER.get(resource["Properties"].get("Handler"))
        if name is not None:
            found[name] = resource
    return found


def logical_id_of_function(stack: Synthesized, name: str) -> str:
    for logical_id, resource in stack.resources("AWS::Lambda::Function").items():
        if resource["Properties"].get("Handler") == HANDLERS[name]:
            return logical_id
    raise AssertionError(f"no function for {name}")


def ref(value: Any) -> str:
    """The one logical id a Ref/GetAtt (possibly inside Fn::Join, e.g. `<arn>:live`) names."""
    found = sorted(set(_refs(value)))
    assert len(found) == 1, f"expected one reference in {value!r}"
    return found[0]


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        if "Ref" in value:
            return [str(value["Ref"])]
        if "Fn::GetAtt" in value:
            return [str(value["Fn::GetAtt"][0])]
        return [r for item in value.values() for r in _refs(item)]
    if isinstance(value, list):
        return [r for item in value for r in _refs(item)]
    return []


# -- Lambda ------------------------------------------------------------------------------------


def test_every_contract_function_is_deployed(stage_stack: Synthesized) -> None:
    assert set(our_functions(stage_stack)) == set(HANDLERS)


def test_every_function_is_bounded_and_traced(stage_stack: Synthesized) -> None:
    """F05 reserved concurrency, F07 timeout, F13 tracing, F16 runtime/arch, F22 loops."""
    for name, resource in our_functions(stage_stack).items():
        props = resource["Properties"]
        settings = stage_stack.config.function(name)
        assert props["ReservedConcurrentExecutions"] == settings.reserved_concurrency, name
        assert props["Timeout"] == settings.timeout_s, name
        assert props["MemorySize"] == settings.memory_mb, name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["Architectures"] == ["arm64"], name
        assert props["Runtime"] == f"python{LAMBDA_PYTHON_VERSION}", name
        assert props["RecursiveLoop"] == "Terminate", name
        assert props["RuntimeManagementConfig"] == {"UpdateRuntimeOn": "FunctionUpdate"}, name
        assert props["Layers"], name


def test_every_function_logs_json_to_its_own_group_with_retention(
    stage_stack: Synthesized,
) -> None:
    groups = stage_stack.resources("AWS::Logs::LogGroup")
    for name, resource in our_functions(stage_stack).items():
        logging = resource["Properties"]["LoggingConfig"]
        assert logging["LogFormat"] == "JSON", name
        group = groups[ref(logging["LogGroup"])]
        assert group["Properties"]["RetentionInDays"] > 0, name


def test_every_function_has_a_live_alias_on_a_published_version(
    stage_stack: Synthesized,
) -> None:
    aliases = stage_stack.resources("AWS::Lambda::Alias").values()
    versions = stage_stack.resources("AWS::Lambda::Version")
    for name in HANDLERS:
        function_id = logical_id_of_function(stage_stack, name)
        live = [
            alias
            for alias in aliases
            if alias["Properties"]["Name"] == LIVE_ALIAS
            and ref(alias["Properties"]["FunctionName"]) == function_id
        ]
        assert len(live) == 1, name
        version_id = ref(live[0]["Properties"]["FunctionVersion"])
        assert ref(versions[version_id]["Properties"]["FunctionName"]) == function_id


# -- Queue -> Intake ---------------------------------------------------------------------------


def _mapping(stage_stack: Synthesized) -> dict[str, Any]:
    mappings = list(stage_stack.resources("AWS::Lambda::EventSourceMapping").values())
    assert mappings, "the orders queue must feed Intake"
    props: dict[str, Any] = mappings[0]["Properties"]
    return props


def test_sqs_mapping_is_bounded_and_reports_partial_failures(stage_stack: Synthesized) -> None:
    """F02 partial batch responses; F05 maximum concurrency."""
    for mapping in stage_stack.resources("AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        queue = stage_stack.config.queue
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert props["ScalingConfig"]["MaximumConcurrency"] == queue.max_concurrency
        assert props["ScalingConfig"]["MaximumConcurrency"] >= 2
        assert props["BatchSize"] == queue.batch_size
        assert props["MaximumBatchingWindowInSeconds"] == queue.max_batching_window_s


def test_mapping_targets_the_intake_alias(stage_stack: Synthesized) -> None:
    alias = stage_stack.raw["Resources"][ref(_mapping(stage_stack)["FunctionName"])]
    assert alias["Type"] == "AWS::Lambda::Alias"
    assert alias["Properties"]["Name"] == LIVE_ALIAS


def test_queue_visibility_covers_six_consumer_timeouts(stage_stack: Synthesized) -> None:
    """F07: read both numbers from the template, through the alias to the function."""
    resources = stage_stack.raw["Resources"]
    for mapping in stage_stack.resources("AWS::Lambda::EventSourceMapping").values():
        props = mapping["Properties"]
        queue = resources[ref(props["EventSourceArn"])]["Properties"]
        alias = resources[ref(props["FunctionName"])]["Properties"]
        function = resources[ref(alias["FunctionName"])]["Properties"]
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]


def test_every_consumed_queue_redrives_to_a_long_lived_dlq(stage_stack: Synthesized) -> None:
    """F02/F17: maxReceiveCount 3..5 and a DLQ that keeps messages 14 days."""
    resources = stage_stack.raw["Resources"]
    for mapping in stage_stack.resources("AWS::Lambda::EventSourceMapping").values():
        queue = resources[ref(mapping["Properties"]["EventSourceArn"])]["Properties"]
        redrive = queue["RedrivePolicy"]
        assert 3 <= redrive["maxReceiveCount"] <= 5
        assert redrive["maxReceiveCount"] == stage_stack.config.queue.max_receive_count
        dlq = resources[ref(redrive["deadLetterTargetArn"])]["Properties"]
        assert dlq["MessageRetentionPeriod"] == DLQ_RETENTION.to_seconds() == 14 * 86400


def test_every_queue_is_encrypted_and_tls_only(stage_stack: Synthesized) -> None:
    queues = stage_stack.resources("AWS::SQS::Queue")
    policies = stage_stack.resources("AWS::SQS::QueuePolicy").values()
    tls_only: set[str] = set()
    for policy in policies:
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(
            s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool") == {"aws:SecureTransport": "false"}
            for s in statements
        ):
            tls_only.update(ref(q) for q in policy["Properties"]["Queues"])
    for logical_id, queue in queues.items():
        assert queue["Properties"]["SqsManagedSseEnabled"] is True, logical_id
        assert logical_id in tls_only, logical_id


# -- DynamoDB ----------------------------------------------------------------------------------


def test_idempotency_table_expires_recovers_and_scales_on_demand(
    stage_stack: Synthesized,
) -> None:
    tables = list(stage_stack.resources("AWS::DynamoDB::Table").values())
    assert tables
    for table in tables:
        props = table["Properties"]
        assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
        assert props["TimeToLiveSpecification"] == {
            "AttributeName": "expiration",
            "Enabled": True,
        }
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["SSESpecification"]["SSEEnabled"] is True


# -- API ---------------------------------------------------------------------------------------


def _methods(stage_stack: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource["Properties"]
        for logical_id, resource in stage_stack.resources("AWS::ApiGateway::Method").items()
        if resource["Properties"]["HttpMethod"] != "OPTIONS"
    }


def test_every_method_requires_a_cognito_token(stage_stack: Synthesized) -> None:
    methods = _methods(stage_stack)
    assert {m["HttpMethod"] for m in methods.values()} == {"POST", "GET"}
    for logical_id, method in methods.items():
        assert method["AuthorizationType"] == "COGNITO_USER_POOLS", logical_id
        assert "AuthorizerId" in method, logical_id
        assert method["RequestValidatorId"], logical_id


def test_post_requires_idempotency_key_and_validates_the_body(stage_stack: Synthesized) -> None:
    """F01 + F11: the edge rejects a POST without the key or with a bad body."""
    (post,) = [m for m in _methods(stage_stack).values() if m["HttpMethod"] == "POST"]
    assert post["RequestParameters"] == {f"method.request.header.{IDEMPOTENCY_HEADER}": True}
    validator = stage_stack.raw["Resources"][ref(post["RequestValidatorId"])]["Properties"]
    assert validator["ValidateRequestBody"] is True
    assert validator["ValidateRequestParameters"] is True
    model = stage_stack.raw["Resources"][ref(post["RequestModels"]["application/json"])]
    assert model["Properties"]["Schema"] == place_order_schema()


def test_methods_proxy_to_the_api_alias(stage_stack: Synthesized) -> None:
    for method in _methods(stage_stack).values():
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        uri = json.dumps(integration["Uri"])
        alias_ids = set(stage_stack.resources("AWS::Lambda::Alias"))
        assert any(alias_id in uri for alias_id in alias_ids)


def test_stage_is_traced_logged_and_throttled(stage_stack: Synthesized) -> None:
    api = stage_stack.config.api
    for stage in stage_stack.resources("AWS::ApiGateway::Stage").values():
        props = stage["Properties"]
        assert props["TracingEnabled"] is True
        assert props["AccessLogSetting"]["DestinationArn"]
        assert json.loads(props["AccessLogSetting"]["Format"])["requestId"]
        throttles = [
            s
            for s in props["MethodSettings"]
            if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"
        ]
        assert throttles[0]["ThrottlingRateLimit"] == api.throttle_rate_limit
        assert throttles[0]["ThrottlingBurstLimit"] == api.throttle_burst_limit


def test_usage_plan_has_quota_and_throttle(stage_stack: Synthesized) -> None:
    plans = list(stage_stack.resources("AWS::ApiGateway::UsagePlan").values())
    assert plans
    for plan in plans:
        props = plan["Properties"]
        assert props["Quota"]["Limit"] == stage_stack.config.api.quota_limit
        assert props["Throttle"]["RateLimit"] == stage_stack.config.api.throttle_rate_limit
        assert props["ApiStages"]


def test_validation_errors_answer_json_with_the_reason(stage_stack: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in stage_stack.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    for response_type in (
        "BAD_REQUEST_BODY",
        "BAD_REQUEST_PARAMETERS",
        "UNAUTHORIZED",
        "ACCESS_DENIED",
    ):
        template = responses[response_type]["ResponseTemplates"]["application/json"]
        assert "$context.error.validationErrorString" in template


# -- Database ----------------------------------------------------------------------------------


def test_proxy_requires_tls_and_end_to_end_iam(stage_stack: Synthesized) -> None:
    """F06/F14: clients and the proxy itself authenticate with IAM; no password in between."""
    proxies = stage_stack.resources("AWS::RDS::DBProxy")
    assert proxies
    policies = stage_stack.resources("AWS::IAM::Policy").values()
    for proxy in proxies.values():
        props = proxy["Properties"]
        assert props["RequireTLS"] is True
        assert props["DefaultAuthScheme"] == "IAM_AUTH"
        role = props["RoleArn"]["Fn::GetAtt"][0]
        proxy_actions = [
            statement["Action"]
            for policy in policies
            if {"Ref": role} in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
        assert proxy_actions == ["rds-db:connect"]


def test_database_is_encrypted_private_and_pinned(stage_stack: Synthesized) -> None:
    db = stage_stack.config.db
    for instance in stage_stack.resources("AWS::RDS::DBInstance").values():
        props = instance["Properties"]
        assert props["StorageEncrypted"] is True
        assert props["EngineVersion"] == db.engine_full_version
        assert props["AutoMinorVersionUpgrade"] is False
        assert props["EnableIAMDatabaseAuthentication"] is True
        assert props["PubliclyAccessible"] is False
        assert props["MultiAZ"] is db.multi_az
        assert props["DeletionProtection"] is db.deletion_protection


def test_master_secret_rotates(stage_stack: Synthesized) -> None:
    """F14: hosted single-user rotation on the generated master secret."""
    schedules = list(stage_stack.resources("AWS::SecretsManager::RotationSchedule").values())
    assert schedules
    for schedule in schedules:
        props = schedule["Properties"]
        assert props["HostedRotationLambda"]["RotationType"] == "PostgreSQLSingleUser"
        assert props["RotationRules"]["ScheduleExpression"]


def test_migrate_runs_after_the_proxy(stage_stack: Synthesized) -> None:
    resources = stage_stack.raw["Resources"]
    triggers = [r for r in resources.values() if r["Type"] == "Custom::Trigger"]
    assert triggers
    proxies = set(stage_stack.resources("AWS::RDS::DBProxy"))
    for trigger in triggers:
        assert proxies & set(trigger.get("DependsOn", []))


@pytest.mark.parametrize("name", STAGES)
def test_connection_budget_holds(name: str) -> None:
    budget = connection_budget(stage_config(name))
    assert budget.holds, budget


def test_over_budget_config_is_rejected() -> None:
    config = stage_config("dev")
    greedy = dict(config.functions)
    greedy["ReserveInventory"] = FunctionSettings(512, 10, reserved_concurrency=10_000)
    with pytest.raises(ConnectionBudgetExceededError):
        dataclasses.replace(config, functions=greedy)


# -- Saga timing -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STAGES)
def test_execution_timeout_is_the_worst_case_arithmetic(name: str) -> None:
    """F07: 6 tasks x (4 attempts x 15 s + 1 + 2 + 4 s of backoff) = 402 s."""
    config = stage_config(name)
    assert config.retry.total_attempts == 4
    assert config.task_timeout_s == 15
    assert saga_execution_timeout_s(config) == 6 * (4 * 15 + 1 + 2 + 4) == 402


def test_state_machine_uses_the_computed_timeout(stage_stack: Synthesized) -> None:
    expected = saga_execution_timeout_s(stage_stack.config)
    for machine in stage_stack.resources("AWS::StepFunctions::StateMachine").values():
        definition = json.dumps(machine["Properties"]["DefinitionString"])
        assert f'\\"TimeoutSeconds\\":{expected}' in definition


# -- Ownership, findings and lint --------------------------------------------------------------


def test_functions_and_data_carry_ownership_tags(stage_stack: Synthesized) -> None:
    """F18."""
    owned = {**our_functions(stage_stack)}
    for cfn_type in ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::RDS::DBInstance"):
        owned.update(stage_stack.resources(cfn_type))
    for logical_id, resource in owned.items():
        tags = {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}
        for key, value in stage_stack.config.tags.items():
            assert tags.get(key) == value, (logical_id, key)


def test_no_unacknowledged_findings(stage_stack: Synthesized) -> None:
    """cdk-nag (AwsSolutions) and the guardrail ran during synthesis and found nothing."""
    report = stage_stack.validation_report()
    for plugin in report.get("pluginReports", []):
        assert plugin["violations"] == [], plugin["pluginName"]
        assert plugin["conclusion"] == "success", plugin["pluginName"]


def test_cfn_lint_is_clean(synthesized: dict[str, Synthesized]) -> None:
    templates = [str(s.template_path) for s in synthesized.values()]
    result = subprocess.run(  # .cfnlintrc in the repo root supplies rules and ignores
        [str(Path(sys.executable).parent / "cfn-lint"), "--", *templates],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
