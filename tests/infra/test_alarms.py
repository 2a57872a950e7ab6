"""Detect (issue 4): the alarms of docs/operations-contract.md, read from both templates.

Every alarm names its catalogue row, links that row's runbook and notifies the one encrypted
topic; every contract row exists with thresholds taken from infra/config.py; every place a
message can end up unprocessed (DLQ, needs-attention queue) alarms as soon as it is not empty.
F12's alarms belong to infra/deployments.py and are not checked here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from infra.catalogue import CATALOGUE, failure
from infra.config import (
    FUNCTION_NAMES,
    PRE_TRAFFIC_HOOK,
    connection_budget,
    saga_step_invocations_worst_case,
)
from infra.guardrails import TERMINAL_QUEUE_KEY, references
from infra.monitoring import BUSINESS_METRICS, EMF_NAMESPACE
from infra.service import this_service
from tests.infra.conftest import Synthesized
from tests.infra.test_stack_hardening import logical_id_of_function, our_functions, ref

ALARM = "AWS::CloudWatch::Alarm"
PER_FUNCTION = (
    "F05-{fn}-concurrency-near-reserved",
    "F05-{fn}-throttles",
    "F07-{fn}-duration-near-timeout",
    "F21-{fn}-memory-near-limit",
    "F22-{fn}-recursive-invocations-dropped",
)
SINGLE = (
    "F01-duplicates-suppressed-high",
    "F02-intake-dlq-not-empty",
    "F02-intake-oldest-message-age",
    "F03-retry-amplification",
    "F04-Api-cold-starts-high",
    "F06-proxy-connections-near-budget",
    "F06-proxy-borrow-latency",
    "F06-proxy-sessions-pinned",
    "F07-saga-executions-timed-out",
    "F08-needs-attention-not-empty",
    "F08-saga-executions-aborted",
    "F08-saga-failure-rate-high",
    "F09-payment-refunds-high",
    "F10-saga-step-errors",
    "F11-api-4xx-rate-high",
    "F11-messages-rejected",
    "F13-api-5xx",
    "F13-api-p99-latency",
    "F14-db-auth-failures",
    "F16-import-errors",
    "F17-alarm-topic-notifications-failed",
    "F18-unknown-message-versions",
    "F19-payment-circuit-open",
    "F20-access-denied",
    "F22-invocation-rate-high",
)
ID_PREFIX = re.compile(r"^(F\d\d)-")


def alarms(stack: Synthesized) -> dict[str, dict[str, Any]]:
    """Contract alarm name -> properties, for every alarm in the template; every AlarmName is
    the stage's prefix plus the contract name (issue 10, finding 5: stages never collide)."""
    found: dict[str, dict[str, Any]] = {}
    for resource in stack.resources(ALARM).values():
        props = resource["Properties"]
        name = props["AlarmName"]
        assert isinstance(name, str), f"alarm name must be literal, got {name!r}"
        assert name.startswith(f"{stack.config.service}-{stack.config.name}-"), name
        contract = stack.config.contract_alarm_name(name)
        assert contract not in found, f"duplicate alarm name {name}"
        found[contract] = props
    return found


def topic_id(stack: Synthesized) -> str:
    topics = stack.resources("AWS::SNS::Topic")
    assert len(topics) == 1, "one alarm topic"
    return next(iter(topics))


def contract_alarm(stack: Synthesized, name: str) -> dict[str, Any]:
    found = alarms(stack)
    assert name in found, f"missing contract alarm {name}"
    return found[name]


# -- rules every alarm follows -----------------------------------------------------------------


def test_every_alarm_name_starts_with_a_catalogue_id(stage_stack: Synthesized) -> None:
    for name in alarms(stage_stack):
        match = ID_PREFIX.match(name)
        assert match, name
        assert match.group(1) in CATALOGUE, name


def test_every_alarm_description_says_why_then_links_its_runbook(
    stage_stack: Synthesized,
) -> None:
    for name, props in alarms(stage_stack).items():
        summary, runbook_line = props["AlarmDescription"].split("\n")
        assert len(summary) > 40, name
        assert runbook_line == f"Runbook: {failure(name[:3]).runbook_url}", name
        assert len(props["AlarmDescription"]) <= 1024, name


def test_every_alarm_notifies_the_topic_and_treats_missing_data_explicitly(
    stage_stack: Synthesized,
) -> None:
    topic = {"Ref": topic_id(stage_stack)}
    for name, props in alarms(stage_stack).items():
        assert props["AlarmActions"] == [topic], name
        assert props["OKActions"] == [topic], name
        assert props["TreatMissingData"] in {"breaching", "notBreaching", "ignore", "missing"}
        assert "MetricName" in props or "Metrics" in props, name


# -- the contract table ------------------------------------------------------------------------


# Built by infra/deployments.py after Monitoring, watched separately (stack.py).
SERVICE_FUNCTIONS = tuple(fn for fn in FUNCTION_NAMES if fn != PRE_TRAFFIC_HOOK)


def test_every_contract_row_has_its_alarm(stage_stack: Synthesized) -> None:
    expected = set(SINGLE) | {
        pattern.format(fn=fn) for pattern in PER_FUNCTION for fn in SERVICE_FUNCTIONS
    }
    missing = expected - set(alarms(stage_stack))
    assert not missing, sorted(missing)


def test_the_pre_traffic_hook_has_its_per_function_alarms(stage_stack: Synthesized) -> None:
    expected = {pattern.format(fn=PRE_TRAFFIC_HOOK) for pattern in PER_FUNCTION}
    assert expected <= set(alarms(stage_stack))


def test_every_catalogue_row_but_f12_and_f15_has_an_alarm(stage_stack: Synthesized) -> None:
    """F12 (CodeDeploy, infra/deployments.py) and F15 (contained at synth) alarm elsewhere."""
    covered = {name[:3] for name in alarms(stage_stack)}
    assert set(CATALOGUE) - covered <= {"F12", "F15"}


def _dead_letter_queues(stack: Synthesized) -> set[str]:
    """Every queue a failure ends in: redrive targets of queues and subscriptions, Lambda
    DLQs and on-failure destinations, and queues marked terminal (needs-attention)."""
    raw = stack.raw["Resources"]
    targets: list[Any] = []
    for resource in raw.values():
        props = resource.get("Properties", {})
        targets.append((props.get("RedrivePolicy") or {}).get("deadLetterTargetArn"))
        targets.append((props.get("DeadLetterConfig") or {}).get("TargetArn"))
        targets.append(
            ((props.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        )
    queues = set(stack.resources("AWS::SQS::Queue"))
    found = {r for target in targets for r in references(target) if r in queues}
    found |= {
        queue
        for queue, resource in stack.resources("AWS::SQS::Queue").items()
        if TERMINAL_QUEUE_KEY in resource.get("Metadata", {})
    }
    return found


def test_every_dlq_and_the_needs_attention_queue_alarm_when_not_empty(
    stage_stack: Synthesized,
) -> None:
    dead_ends = _dead_letter_queues(stage_stack)
    assert len(dead_ends) >= 2  # the intake DLQ and the needs-attention queue at least
    watched = set()
    for props in alarms(stage_stack).values():
        if props.get("MetricName") != "ApproximateNumberOfMessagesVisible":
            continue
        assert props["Threshold"] == 0
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        (dimension,) = props["Dimensions"]
        watched.add(ref(dimension["Value"]))
    assert dead_ends <= watched, sorted(dead_ends - watched)


# -- thresholds come from the stage config -----------------------------------------------------


def test_per_function_thresholds_are_fractions_of_the_configured_limits(
    stage_stack: Synthesized,
) -> None:
    config = stage_stack.config
    near = config.alarms.near_limit_fraction
    found = alarms(stage_stack)
    for fn in SERVICE_FUNCTIONS:
        settings = config.function(fn)
        function_id = logical_id_of_function(stage_stack, fn)
        concurrency = found[f"F05-{fn}-concurrency-near-reserved"]
        assert concurrency["Threshold"] == pytest.approx(near * settings.reserved_concurrency)
        assert concurrency["Dimensions"] == [
            {"Name": "FunctionName", "Value": {"Ref": function_id}}
        ]
        duration = found[f"F07-{fn}-duration-near-timeout"]
        assert duration["Threshold"] == pytest.approx(near * settings.timeout_s * 1000)
        assert duration["Statistic"] == "Maximum"
        memory = found[f"F21-{fn}-memory-near-limit"]
        assert memory["Threshold"] == pytest.approx(near * settings.memory_mb)
        assert found[f"F05-{fn}-throttles"]["Threshold"] == 0
        assert found[f"F22-{fn}-recursive-invocations-dropped"]["Threshold"] == 0


def test_stage_thresholds_come_from_config(stage_stack: Synthesized) -> None:
    config = stage_stack.config
    t = config.alarms
    found = alarms(stage_stack)
    assert found["F02-intake-oldest-message-age"]["Threshold"] == t.intake_oldest_message_age_s
    assert found["F01-duplicates-suppressed-high"]["Threshold"] == t.duplicates_suppressed
    assert found["F04-Api-cold-starts-high"]["Threshold"] == t.api_cold_starts
    assert found["F06-proxy-connections-near-budget"]["Threshold"] == pytest.approx(
        t.near_limit_fraction * connection_budget(config).capacity
    )
    assert found["F03-retry-amplification"]["Threshold"] == pytest.approx(
        t.retry_amplification_fraction * saga_step_invocations_worst_case(config)
    )
    assert found["F08-saga-failure-rate-high"]["Threshold"] == t.saga_failure_rate_percent
    assert found["F13-api-p99-latency"]["Threshold"] == t.api_p99_latency_ms


def test_retry_amplification_divides_step_invocations_by_started_executions(
    stage_stack: Synthesized,
) -> None:
    """F03: the ratio's inputs are the six saga steps' Invocations and ExecutionsStarted."""
    queries = contract_alarm(stage_stack, "F03-retry-amplification")["Metrics"]
    stats = [q["MetricStat"]["Metric"] for q in queries if "MetricStat" in q]
    step_ids = {
        logical_id_of_function(stage_stack, fn)
        for fn in (
            "ReserveInventory",
            "TakePayment",
            "ConfirmOrder",
            "RefundPayment",
            "ReleaseInventory",
            "MarkOrderFailed",
        )
    }
    invoked = {ref(m["Dimensions"]) for m in stats if m["MetricName"] == "Invocations"}
    assert invoked == step_ids
    assert [m["MetricName"] for m in stats if m["Namespace"] == "AWS/States"] == [
        "ExecutionsStarted"
    ]


# -- EMF and log-derived metrics match what the code emits -------------------------------------


def test_emf_alarms_use_the_namespace_and_service_powertools_emits(
    stage_stack: Synthesized,
) -> None:
    from orders_saga.observability import metrics

    assert metrics.namespace == EMF_NAMESPACE
    emf = [p for p in alarms(stage_stack).values() if p.get("Namespace") == EMF_NAMESPACE]
    assert {p["MetricName"] for p in emf} >= {
        "DuplicatesSuppressed",
        "PaymentsRefunded",
        "MessagesRejected",
        "PaymentCircuitOpened",
        "ColdStart",
    }
    for props in emf:
        dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}
        assert dimensions["service"] == metrics.service == stage_stack.config.service


def test_cold_start_alarm_has_powertools_function_name_dimension(
    stage_stack: Synthesized,
) -> None:
    """Powertools adds function_name (the Lambda context's, i.e. the physical name)."""
    props = contract_alarm(stage_stack, "F04-Api-cold-starts-high")
    dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}
    assert dimensions["function_name"] == {"Ref": logical_id_of_function(stage_stack, "Api")}


def test_log_signals_filter_every_function_log_group(stage_stack: Synthesized) -> None:
    """F14, F16, F20 read every function's log group; F21 each platform.report line."""
    groups = {
        name: ref(resource["Properties"]["LoggingConfig"]["LogGroup"])
        for name, resource in our_functions(stage_stack).items()
    }
    filters: dict[str, set[str]] = {}
    for resource in stage_stack.resources("AWS::Logs::MetricFilter").values():
        props = resource["Properties"]
        (transformation,) = props["MetricTransformations"]
        filters.setdefault(transformation["MetricName"], set()).add(ref(props["LogGroupName"]))
    watched = {name: group for name, group in groups.items() if name != PRE_TRAFFIC_HOOK}
    for metric in ("AuthFailures", "InitErrors", "AccessDenied"):
        assert filters[metric] >= set(watched.values()), metric
    for name, group in watched.items():
        assert filters[f"{name}MaxMemoryUsedMB"] == {group}, name


def test_memory_filter_reads_max_memory_from_the_json_platform_report(
    stage_stack: Synthesized,
) -> None:
    for resource in stage_stack.resources("AWS::Logs::MetricFilter").values():
        props = resource["Properties"]
        (transformation,) = props["MetricTransformations"]
        if transformation["MetricName"].endswith("MaxMemoryUsedMB"):
            assert props["FilterPattern"] == '{ $.type = "platform.report" }'
            assert transformation["MetricValue"] == "$.record.metrics.maxMemoryUsedMB"


def test_functions_deliver_the_platform_report_line(stage_stack: Synthesized) -> None:
    for name, resource in our_functions(stage_stack).items():
        level = resource["Properties"]["LoggingConfig"].get("SystemLogLevel", "INFO")
        assert level in {"INFO", "DEBUG"}, name


# -- topic, budget, dashboard --------------------------------------------------------------------


def test_alarm_topic_is_kms_encrypted_with_rotation_and_tls_only(
    stage_stack: Synthesized,
) -> None:
    topic = stage_stack.resources("AWS::SNS::Topic")[topic_id(stage_stack)]["Properties"]
    key = stage_stack.resources("AWS::KMS::Key")[ref(topic["KmsMasterKeyId"])]["Properties"]
    assert key["EnableKeyRotation"] is True
    (policy,) = stage_stack.resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    for service in ("budgets.amazonaws.com", "cloudwatch.amazonaws.com"):
        # Both may publish to the topic and encrypt for its key, for this account only.
        for document in (statements, key["KeyPolicy"]["Statement"]):
            (grant,) = [s for s in document if s.get("Principal") == {"Service": service}]
            account = this_service().stage(stage_stack.config.name).account
            assert grant["Condition"]["StringEquals"] == {"aws:SourceAccount": account}


def test_alarm_emails_come_from_the_stage_config(stage_stack: Synthesized) -> None:
    subscriptions = stage_stack.resources("AWS::SNS::Subscription").values()
    emails = {s["Properties"]["Endpoint"] for s in subscriptions}
    assert emails == set(stage_stack.config.alarm_emails)
    for subscription in subscriptions:
        assert subscription["Properties"]["Protocol"] == "email"
        assert subscription["Properties"]["RedrivePolicy"]  # F17: parked, never dropped


def test_monthly_budget_notifies_the_topic(stage_stack: Synthesized) -> None:
    """F05/F22: 80% of actual spend and 100% of the forecast reach the alarm topic."""
    config = stage_stack.config
    (budget,) = stage_stack.resources("AWS::Budgets::Budget").values()
    props = budget["Properties"]
    assert props["Budget"]["BudgetName"] == f"{config.service}-{config.name}-monthly"
    assert props["Budget"]["BudgetType"] == "COST"
    assert props["Budget"]["TimeUnit"] == "MONTHLY"
    assert props["Budget"]["BudgetLimit"] == {"Amount": config.monthly_budget_usd, "Unit": "USD"}
    notified = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
        for n in props["NotificationsWithSubscribers"]
        if n["Subscribers"]
        == [{"Address": {"Ref": topic_id(stage_stack)}, "SubscriptionType": "SNS"}]
    }
    assert notified == {("ACTUAL", 80), ("FORECASTED", 100)}


def test_dashboard_shows_alarms_business_metrics_and_the_proxy(stage_stack: Synthesized) -> None:
    (dashboard,) = stage_stack.resources("AWS::CloudWatch::Dashboard").values()
    props = dashboard["Properties"]
    assert props["DashboardName"] == f"{stage_stack.config.service}-{stage_stack.config.name}"
    body = repr(props["DashboardBody"])
    for metric in (*BUSINESS_METRICS, "ClientConnections", "DatabaseConnectionsBorrowLatency"):
        assert metric in body, metric
    assert '\\"type\\":\\"alarm\\"' in body or '"type":"alarm"' in body


def test_every_dashboard_business_metric_is_emitted_by_the_function_code() -> None:
    """A widget or alarm on a metric nobody emits stays empty forever: catch the drift."""
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for path in (Path(__file__).resolve().parents[2] / "functions" / "orders_saga").rglob(
            "*.py"
        )
    )
    emitted = set(re.findall(r'add_metric\(\s*name="(\w+)"', source))
    assert set(BUSINESS_METRICS) <= emitted, sorted(set(BUSINESS_METRICS) - emitted)
