"""F12 in the synthesized templates: versions and aliases, CodeDeploy groups, the pre-traffic
hook, rollback alarms on the new version, stage-specific traffic shifting, and provisioned
concurrency on the prod Api alias (F04).

Every property is read from the template (both stages) and compared with infra/config.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from infra.catalogue import failure
from infra.config import PRE_TRAFFIC_HOOK, ConfigError, stage_config
from infra.deployments import MAX_ALARMS_PER_GROUP, NOT_CODEDEPLOYED
from infra.functions import HANDLERS, LIVE_ALIAS
from tests.infra.conftest import Synthesized

DEPLOYED = sorted(set(HANDLERS) - set(NOT_CODEDEPLOYED) - {PRE_TRAFFIC_HOOK})
# Monitoring's saga failure-rate alarm, passed by the stack as an extra rollback alarm.
SAGA_FAILURE_ALARM = "F08-saga-failure-rate-high"


# -- template helpers ----------------------------------------------------------------------


def refs(value: Any) -> list[str]:
    """Logical ids referenced (Ref / GetAtt) anywhere inside a CloudFormation value."""
    if isinstance(value, dict):
        if "Ref" in value:
            return [str(value["Ref"])]
        if "Fn::GetAtt" in value:
            return [str(value["Fn::GetAtt"][0])]
        return [r for item in value.values() for r in refs(item)]
    if isinstance(value, list):
        return [r for item in value for r in refs(item)]
    return []


def the_ref(value: Any) -> str:
    found = sorted(set(refs(value)))
    assert len(found) == 1, f"expected one reference in {value!r}"
    return found[0]


def function_id(stack: Synthesized, name: str) -> str:
    (logical_id,) = [
        lid
        for lid, resource in stack.resources("AWS::Lambda::Function").items()
        if resource["Properties"].get("Handler") == HANDLERS[name]
    ]
    return logical_id


def live_alias(stack: Synthesized, name: str) -> dict[str, Any]:
    fn = function_id(stack, name)
    (alias,) = [
        resource
        for resource in stack.resources("AWS::Lambda::Alias").values()
        if resource["Properties"]["Name"] == LIVE_ALIAS
        and the_ref(resource["Properties"]["FunctionName"]) == fn
    ]
    return alias


def alias_update(stack: Synthesized, name: str) -> dict[str, Any]:
    policy: dict[str, Any] = live_alias(stack, name)["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    return policy


def group_of(stack: Synthesized, name: str) -> dict[str, Any]:
    group_id = the_ref(alias_update(stack, name)["DeploymentGroupName"])
    group: dict[str, Any] = stack.resources("AWS::CodeDeploy::DeploymentGroup")[group_id]
    return group


def alarm_names_of(stack: Synthesized, group: dict[str, Any]) -> list[str]:
    """Group alarm names (literal, or through a Ref to an alarm of this template) as contract
    names: each must carry its own stage's prefix, never another stage's (issue 10)."""
    alarms = stack.resources("AWS::CloudWatch::Alarm")
    names = []
    for entry in group["Properties"]["AlarmConfiguration"]["Alarms"]:
        name = entry["Name"]
        literal = (
            name if isinstance(name, str) else alarms[the_ref(name)]["Properties"]["AlarmName"]
        )
        names.append(stack.config.contract_alarm_name(literal))
    return names


def alarm_named(stack: Synthesized, alarm_name: str) -> dict[str, Any]:
    """The alarm whose contract name is ``alarm_name``."""
    (alarm,) = [
        a
        for a in stack.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["AlarmName"] == stack.config.alarm_name(alarm_name)
    ]
    return alarm


def metric_dimensions(alarm: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The dimensions of every metric the alarm reads (plain metric or metric math)."""
    props = alarm["Properties"]
    if "Dimensions" in props:
        yield {d["Name"]: d["Value"] for d in props["Dimensions"]}
    for query in props.get("Metrics", []):
        if "MetricStat" in query:
            yield {d["Name"]: d["Value"] for d in query["MetricStat"]["Metric"]["Dimensions"]}


def hook_function_id(stack: Synthesized) -> str:
    return function_id(stack, PRE_TRAFFIC_HOOK)


def hook_role_id(stack: Synthesized) -> str:
    hook = stack.resources("AWS::Lambda::Function")[hook_function_id(stack)]
    return the_ref(hook["Properties"]["Role"])


def hook_statements(stack: Synthesized) -> list[dict[str, Any]]:
    """Every statement of every policy attached to the hook's role."""
    role = hook_role_id(stack)
    return [
        statement
        for policy in stack.resources("AWS::IAM::Policy").values()
        if role in refs(policy["Properties"]["Roles"])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- versions, aliases, groups -------------------------------------------------------------


def test_every_function_but_migrate_is_deployed_by_codedeploy(stage_stack: Synthesized) -> None:
    groups = stage_stack.resources("AWS::CodeDeploy::DeploymentGroup")
    deployed_groups = set()
    for name in DEPLOYED:
        update = alias_update(stage_stack, name)
        group_id = the_ref(update["DeploymentGroupName"])
        assert group_id in groups, name
        assert groups[group_id]["Properties"]["DeploymentStyle"] == {
            "DeploymentOption": "WITH_TRAFFIC_CONTROL",
            "DeploymentType": "BLUE_GREEN",
        }, name
        deployed_groups.add(group_id)
    assert len(deployed_groups) == len(DEPLOYED), "one group per function"
    # Migrate runs from its deploy-time trigger; the hook is the deployments' own tool.
    for name in (*NOT_CODEDEPLOYED, PRE_TRAFFIC_HOOK):
        assert "UpdatePolicy" not in live_alias(stage_stack, name), name
    assert set(groups) == deployed_groups


def test_traffic_shifting_follows_the_stage(stage_stack: Synthesized) -> None:
    expected = {
        "dev": "CodeDeployDefault.LambdaAllAtOnce",
        "prod": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
    }[stage_stack.config.name]
    configured = stage_stack.config.deployment.traffic_shifting.deployment_config_name
    assert configured == expected
    for name in DEPLOYED:
        assert group_of(stage_stack, name)["Properties"]["DeploymentConfigName"] == expected


def test_every_group_rolls_back_on_failure_stop_and_alarm(stage_stack: Synthesized) -> None:
    for name in DEPLOYED:
        props = group_of(stage_stack, name)["Properties"]
        rollback = props["AutoRollbackConfiguration"]
        assert rollback["Enabled"] is True, name
        assert set(rollback["Events"]) == {
            "DEPLOYMENT_FAILURE",
            "DEPLOYMENT_STOP_ON_ALARM",
            "DEPLOYMENT_STOP_ON_REQUEST",
        }, name
        assert props["AlarmConfiguration"]["Enabled"] is True, name
        assert not props["AlarmConfiguration"].get("IgnorePollAlarmFailure"), name


def test_every_group_has_its_f12_alarms_and_the_saga_alarm(stage_stack: Synthesized) -> None:
    defined = {
        stage_stack.config.contract_alarm_name(a["Properties"]["AlarmName"])
        for a in stage_stack.resources("AWS::CloudWatch::Alarm").values()
    }
    for name in DEPLOYED:
        names = alarm_names_of(stage_stack, group_of(stage_stack, name))
        assert names == [f"F12-{name}-errors", f"F12-{name}-latency-p99", SAGA_FAILURE_ALARM]
        assert len(names) <= MAX_ALARMS_PER_GROUP
        # Extra alarms are named literally (no Ref, see Deployments._by_name): they must exist.
        assert set(names) <= defined, name


def test_f12_alarms_watch_only_the_alias_new_version(stage_stack: Synthesized) -> None:
    for name in DEPLOYED:
        fn = function_id(stage_stack, name)
        new_version = the_ref(live_alias(stage_stack, name)["Properties"]["FunctionVersion"])
        for alarm_name in (f"F12-{name}-errors", f"F12-{name}-latency-p99"):
            dimension_sets = list(metric_dimensions(alarm_named(stage_stack, alarm_name)))
            assert dimension_sets, alarm_name
            for dims in dimension_sets:
                assert set(dims) == {"FunctionName", "Resource", "ExecutedVersion"}, alarm_name
                assert the_ref(dims["FunctionName"]) == fn
                assert dims["Resource"] == {"Fn::Join": ["", [{"Ref": fn}, f":{LIVE_ALIAS}"]]}
                # The very version the alias moves to (GetAtt <Version>.Version).
                assert dims["ExecutedVersion"] == {"Fn::GetAtt": [new_version, "Version"]}


def test_f12_alarm_thresholds_come_from_the_stage_config(stage_stack: Synthesized) -> None:
    settings = stage_stack.config.deployment
    for name in DEPLOYED:
        errors = alarm_named(stage_stack, f"F12-{name}-errors")["Properties"]
        assert errors["Threshold"] == settings.rollback_error_rate_percent
        (expression,) = [m["Expression"] for m in errors["Metrics"] if "Expression" in m]
        assert f">= {settings.rollback_min_errors}" in expression
        latency = alarm_named(stage_stack, f"F12-{name}-latency-p99")["Properties"]
        timeout_ms = stage_stack.config.function(name).timeout_s * 1000
        assert latency["ExtendedStatistic"] == "p99"
        assert latency["Threshold"] == (
            timeout_ms * settings.rollback_latency_p99_percent_of_timeout // 100
        )
        assert latency["Threshold"] < timeout_ms
        assert latency["DatapointsToAlarm"] == settings.latency_datapoints_to_alarm


def test_f12_alarms_follow_the_operations_contract(stage_stack: Synthesized) -> None:
    """Name, description (what + runbook), explicit missing data, ALARM and OK to the topic."""
    runbook = f"Runbook: {failure('F12').runbook_url}"
    topics = set(stage_stack.resources("AWS::SNS::Topic"))
    for name in DEPLOYED:
        for alarm_name in (f"F12-{name}-errors", f"F12-{name}-latency-p99"):
            props = alarm_named(stage_stack, alarm_name)["Properties"]
            first, second = props["AlarmDescription"].split("\n")
            assert name in first, alarm_name
            assert "rolls" in first or "previous version" in first, alarm_name
            assert second == runbook
            assert props["TreatMissingData"] == "notBreaching"
            for actions in (props["AlarmActions"], props["OKActions"]):
                assert {the_ref(a) for a in actions} <= topics, alarm_name
                assert actions, alarm_name


# -- the pre-traffic hook ------------------------------------------------------------------


def test_every_group_runs_the_pre_traffic_hook(stage_stack: Synthesized) -> None:
    hook = hook_function_id(stage_stack)
    for name in DEPLOYED:
        update = alias_update(stage_stack, name)
        assert refs(update["BeforeAllowTrafficHook"]) == [hook], name
        assert "AfterAllowTrafficHook" not in update, name
        # CloudFormation orders on the update policy's Refs; the stack states them as
        # DependsOn too (so cfn-lint sees them): hook and group exist before a deployment.
        depends_on = set(live_alias(stage_stack, name).get("DependsOn", []))
        assert {hook, the_ref(update["DeploymentGroupName"])} <= depends_on, name


def test_the_hook_is_a_hardened_function_outside_the_vpc(stage_stack: Synthesized) -> None:
    props = stage_stack.resources("AWS::Lambda::Function")[hook_function_id(stage_stack)][
        "Properties"
    ]
    settings = stage_stack.config.function(PRE_TRAFFIC_HOOK)
    assert props["ReservedConcurrentExecutions"] == settings.reserved_concurrency
    assert props["Timeout"] == settings.timeout_s
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["RecursiveLoop"] == "Terminate"
    assert "VpcConfig" not in props  # only Lambda and CodeDeploy APIs: no NAT dependency
    env = props["Environment"]["Variables"]
    assert env["AWS_READ_TIMEOUT_S"] == str(stage_stack.config.deployment.health_check_timeout_s)


def test_the_hook_may_invoke_only_the_deployed_functions_versions(
    stage_stack: Synthesized,
) -> None:
    """F20: InvokeFunction on `<function ARN>:*` of the 8 deployed functions, nothing else."""
    invokable = [
        resource
        for statement in hook_statements(stage_stack)
        if "lambda:InvokeFunction" in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]
    expected = {function_id(stage_stack, name) for name in DEPLOYED}
    assert {the_ref(r) for r in invokable} == expected
    for resource in invokable:
        parts = resource["Fn::Join"][1]
        assert parts[-1] == ":*", resource  # versions only: the unqualified ARN is not granted
        assert the_ref(parts) in expected


def test_the_hook_reports_and_reads_only_its_groups(stage_stack: Synthesized) -> None:
    groups = set(stage_stack.resources("AWS::CodeDeploy::DeploymentGroup"))
    actions: dict[str, set[str]] = {}
    for statement in hook_statements(stage_stack):
        for action in as_list(statement["Action"]):
            assert "*" not in action, action
            if action.startswith("codedeploy:"):
                for resource in as_list(statement["Resource"]):
                    group = [r for r in refs(resource) if r in groups]
                    assert len(group) == 1, resource
                    actions.setdefault(group[0], set()).add(action)
    assert set(actions) == groups
    for group_actions in actions.values():
        assert group_actions == {
            "codedeploy:GetDeployment",
            "codedeploy:PutLifecycleEventHookExecutionStatus",
        }


# -- provisioned concurrency (F04) ---------------------------------------------------------


def test_provisioned_concurrency_only_on_the_prod_api_alias(stage_stack: Synthesized) -> None:
    expected = stage_stack.config.api.provisioned_concurrency
    assert (expected > 0) == (stage_stack.config.name == "prod")
    for name in HANDLERS:
        config = live_alias(stage_stack, name)["Properties"].get("ProvisionedConcurrencyConfig")
        if name == "Api" and expected:
            assert config == {"ProvisionedConcurrentExecutions": expected}
        else:
            assert config is None, name


# -- stage config invariants ---------------------------------------------------------------


def test_a_hook_timeout_shorter_than_its_invoke_budget_is_rejected() -> None:
    config = stage_config("prod")
    functions = dict(config.functions)
    functions[PRE_TRAFFIC_HOOK] = dataclasses.replace(functions[PRE_TRAFFIC_HOOK], timeout_s=30)
    with pytest.raises(ConfigError, match=PRE_TRAFFIC_HOOK):
        dataclasses.replace(config, functions=functions)


@pytest.mark.parametrize(
    "change",
    [
        {"rollback_error_rate_percent": 0},
        {"rollback_min_errors": 0},
        {"rollback_latency_p99_percent_of_timeout": 100},
        {"latency_datapoints_to_alarm": 4, "latency_evaluation_periods": 3},
    ],
)
def test_unbounded_rollback_settings_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(stage_config("prod").deployment, **change)
