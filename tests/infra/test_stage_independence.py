"""Two stages in one account and region never collide (issue 10, finding 5).

The session synthesizes dev and prod for the same account and region (tests/synth.py, the
offline pair), which is exactly the case: every account-wide name, every alarm, every EMF
metric an alarm watches and every export must belong to one stage only, and a stateful
resource with a fixed name must not survive a failed first create (or the retry collides).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from infra.monitoring import COLD_START_METRIC, EMF_NAMESPACE
from tests.infra.conftest import Synthesized

# Names that are unique only inside their parent (an alias within its function, a stage or
# model within its API, an inline policy within its role...) or that refer to something
# rather than name it (a deployment config, a service, a CA).
SCOPED_OR_REFERENCE = {
    ("AWS::Lambda::Alias", "Name"),
    ("AWS::ApiGateway::Stage", "StageName"),
    ("AWS::ApiGateway::Model", "Name"),
    ("AWS::ApiGateway::Authorizer", "Name"),
    ("AWS::ApiGateway::RestApi", "Name"),  # not unique in AWS; the stack's id tells them apart
    ("AWS::RDS::DBProxyTargetGroup", "TargetGroupName"),
    ("AWS::RDS::DBInstance", "DBName"),
    ("AWS::RDS::DBInstance", "CACertificateIdentifier"),
    ("AWS::IAM::Policy", "PolicyName"),
    ("AWS::CodeDeploy::DeploymentGroup", "DeploymentConfigName"),
    ("AWS::EC2::VPCEndpoint", "ServiceName"),
    ("AWS::CloudWatch::Alarm", "MetricName"),  # what it watches: the metrics test below
    ("AWS::Logs::MetricFilter", "MetricName"),
}
RETAINED = {"Retain", "Snapshot"}


def literal_names(stack: Synthesized) -> Iterator[tuple[str, str, str, str]]:
    """(logical id, type, property, value) of every literal name a resource sets."""
    for logical_id, resource in stack.raw["Resources"].items():
        for prop, value in resource.get("Properties", {}).items():
            if (
                (prop.endswith("Name") or prop.endswith("Identifier"))
                and isinstance(value, str)
                and (resource["Type"], prop) not in SCOPED_OR_REFERENCE
            ):
                yield logical_id, resource["Type"], prop, value


def test_no_account_wide_name_is_shared_by_the_two_stages(
    synthesized: dict[str, Synthesized],
) -> None:
    """Fails if: a name without the stage comes back (an alarm, log group, dashboard, DB
    instance or proxy named the same in dev and prod: the second deploy fails, or one stage's
    alarm rolls back the other's deploy)."""
    dev, prod = (
        {(kind, prop, value) for _, kind, prop, value in literal_names(synthesized[stage])}
        for stage in ("dev", "prod")
    )

    assert any(kind == "AWS::CloudWatch::Alarm" for kind, _, _ in dev)  # the test sees names
    assert dev & prod == set()


def test_every_rollback_alarm_a_deployment_group_names_is_its_own_stages(
    synthesized: dict[str, Synthesized],
) -> None:
    for stage, stack in synthesized.items():
        groups = stack.resources("AWS::CodeDeploy::DeploymentGroup").values()
        alarms = stack.resources("AWS::CloudWatch::Alarm")
        for group in groups:
            for entry in group["Properties"]["AlarmConfiguration"]["Alarms"]:
                name = entry["Name"]
                if not isinstance(name, str):
                    name = alarms[name["Ref"]]["Properties"]["AlarmName"]
                assert name.startswith(stack.config.alarm_prefix), (stage, name)


def emf_metrics(stack: Synthesized) -> set[tuple[str, str]]:
    """(metric name, dimensions as JSON) of every alarm on the functions' EMF namespace."""
    found = set()
    for alarm in stack.resources("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        entries: list[dict[str, Any]] = [props]
        entries += [
            m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m
        ]
        for metric in entries:
            if metric.get("Namespace") == EMF_NAMESPACE:
                # A Ref names a resource of this stack only (ColdStart's function_name).
                dims = sorted(
                    (
                        d["Name"],
                        f"{stack.config.name}:{d['Value']}"
                        if isinstance(d["Value"], dict)
                        else d["Value"],
                    )
                    for d in metric["Dimensions"]
                )
                found.add((metric["MetricName"], json.dumps(dims)))
    return found


def test_no_emf_metric_an_alarm_watches_is_shared_by_the_two_stages(
    synthesized: dict[str, Synthesized],
) -> None:
    """Fails if: the alarms stop querying the stage dimension (dev's duplicates or refunds
    would then page prod's on-call)."""
    dev, prod = emf_metrics(synthesized["dev"]), emf_metrics(synthesized["prod"])

    assert dev
    assert dev & prod == set()


def test_the_code_emits_the_stage_dimension_the_alarms_query(stage_stack: Synthesized) -> None:
    """Fails if: observability.py drops the stage default dimension (the alarms would watch a
    metric nobody emits) or a function loses its STAGE variable."""
    from orders_saga.observability import metrics

    metrics.add_metric(name="DuplicatesSuppressed", unit="Count", value=1)
    blob = metrics.serialize_metric_set()
    metrics.clear_metrics()
    (emitted,) = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    queried = {
        frozenset(name for name, _ in json.loads(dims))
        for metric, dims in emf_metrics(stage_stack)
        if metric != COLD_START_METRIC
    }

    assert queried == {frozenset(emitted)} == {frozenset({"service", "stage"})}
    for resource in stage_stack.resources("AWS::Lambda::Function").values():
        env = resource["Properties"].get("Environment", {}).get("Variables", {})
        if "POWERTOOLS_SERVICE_NAME" in env:
            assert env["STAGE"] == stage_stack.config.name


def test_no_output_is_exported_under_a_shared_name(synthesized: dict[str, Synthesized]) -> None:
    exports = [
        {
            json.dumps(output["Export"]["Name"])
            for output in stack.raw.get("Outputs", {}).values()
            if "Export" in output
        }
        for stack in synthesized.values()
    ]

    assert exports[0] & exports[1] == set()


def test_a_retained_resource_with_a_fixed_name_does_not_survive_a_failed_create(
    stage_stack: Synthesized,
) -> None:
    """CloudFormation's Retain keeps a resource even when the stack's first create rolls back;
    with a fixed name the retried deploy then fails on "already exists". RetainExceptOnCreate
    keeps it on deletion and update only.

    Fails if: a fixed-name log group (the RDS exports) goes back to Retain."""
    for logical_id, kind, _, _ in literal_names(stage_stack):
        resource = stage_stack.raw["Resources"][logical_id]
        if kind in {"AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"}:
            continue  # no data: CloudFormation deletes them, nothing is retained
        assert resource.get("DeletionPolicy") not in RETAINED or kind == "AWS::RDS::DBInstance", (
            logical_id,
            resource.get("DeletionPolicy"),
        )
