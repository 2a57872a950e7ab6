"""The hardening guardrail fails synthesis for each rule, naming the resource and the F-id.

Every case builds one tiny stack twice: ``bad=True`` breaks exactly one rule, ``bad=False`` is
the same stack done right. The bad one must report that rule's error on that resource; the good
one must report no guardrail error at all (so the "good" builders are also the reference for
what a compliant resource looks like).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from infra.guardrails import (
    Violation,
    acknowledge,
    apply_guardrails,
    check_assembly,
    check_template,
    mark_terminal_queue,
    state_machine_definition,
)

REPO = Path(__file__).resolve().parents[2]
INLINE_CODE = "def handler(e, c): pass"


# -- compliant building blocks (each case breaks one thing) ----------------------------------


def function(
    scope: cdk.Stack, cid: str, *, bad: str | None = None, timeout_s: int = 10
) -> lambda_.Function:
    """A function that passes every function rule, unless ``bad`` names the one to break."""
    settings: dict[str, Any] = {
        "timeout": cdk.Duration.seconds(timeout_s),
        "reserved_concurrent_executions": 2,
        "tracing": lambda_.Tracing.ACTIVE,
        "log_group": logs.LogGroup(scope, f"{cid}Logs", retention=logs.RetentionDays.ONE_WEEK),
        "recursive_loop": lambda_.RecursiveLoop.TERMINATE,
    }
    if bad == "log_group":
        settings["log_group"] = logs.LogGroup(
            scope, f"{cid}ForeverLogs", retention=logs.RetentionDays.INFINITE
        )
    elif bad == "recursive_loop":
        settings["recursive_loop"] = lambda_.RecursiveLoop.ALLOW
    elif bad == "tracing":
        settings["tracing"] = lambda_.Tracing.PASS_THROUGH
    elif bad is not None:
        del settings[bad]
    return lambda_.Function(
        scope,
        cid,
        runtime=lambda_.Runtime.PYTHON_3_13,
        handler="index.handler",
        code=lambda_.Code.from_inline(INLINE_CODE),
        **settings,
    )


def queue(scope: cdk.Stack, cid: str, *, visibility_s: int = 60) -> sqs.Queue:
    dlq = sqs.Queue(scope, f"{cid}Dlq")
    return sqs.Queue(
        scope,
        cid,
        visibility_timeout=cdk.Duration.seconds(visibility_s),
        dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=3, queue=dlq),
    )


def dlq_of(scope: cdk.Stack, cid: str) -> sqs.Queue:
    return sqs.Queue(scope, cid)  # compliant as a DLQ only once something uses it as one


def async_safe(fn: lambda_.Function, scope: cdk.Stack) -> None:
    """An asynchronously invoked function keeps what finally fails (F17)."""
    fn.configure_async_invoke(
        retry_attempts=2,
        on_failure=destinations.SqsDestination(dlq_of(scope, f"{fn.node.id}AsyncDlq")),
    )


def jittered(task: sfn.TaskStateBase) -> sfn.TaskStateBase:
    task.add_retry(
        errors=["States.ALL"],
        max_attempts=2,
        max_delay=cdk.Duration.seconds(4),
        jitter_strategy=sfn.JitterType.FULL,
    )
    return task


# -- the cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    catalogue_id: str
    path: str  # construct path fragment of the resource the error must be attached to
    message: str  # fragment of the violation message
    build: Callable[[cdk.Stack, bool], None]


def _function_case(setting: str) -> Callable[[cdk.Stack, bool], None]:
    def build(stack: cdk.Stack, bad: bool) -> None:
        function(stack, "Fn", bad=setting if bad else None)

    return build


def _queue_without_dlq(stack: cdk.Stack, bad: bool) -> None:
    plain = sqs.Queue(stack, "Plain")
    if not bad:
        mark_terminal_queue(plain, "F08: operators drain it by hand")
    queue(stack, "WithDlq")  # a queue with a DLQ, and the DLQ itself: both fine


def _sqs_mapping(
    *, visibility_s: int = 60, report: bool = True, concurrency: int | None = 2
) -> Callable[[cdk.Stack, bool], None]:
    def build(stack: cdk.Stack, bad: bool) -> None:
        fn = function(stack, "Consumer", timeout_s=10)
        source = queue(stack, "Source", visibility_s=visibility_s if bad else 60)
        fn.add_event_source(
            sources.SqsEventSource(
                source,
                report_batch_item_failures=report or not bad,
                max_concurrency=concurrency if bad else 2,
            )
        )

    return build


def _stream_mapping(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Consumer")
    table = dynamodb.Table(
        stack,
        "Table",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        stream=dynamodb.StreamViewType.NEW_IMAGE,
    )
    bounded: dict[str, Any] = (
        {}
        if bad
        else {
            "retry_attempts": 3,
            "max_record_age": cdk.Duration.hours(1),
            "bisect_batch_on_error": True,
            "on_failure": sources.SqsDlq(dlq_of(stack, "StreamFailures")),
            "parallelization_factor": 1,
        }
    )
    fn.add_event_source(
        sources.DynamoEventSource(
            table, starting_position=lambda_.StartingPosition.LATEST, **bounded
        )
    )


def _state_machine(
    *, task_timeout: bool = True, jitter: bool = True, map_concurrency: bool = True
) -> Callable[[cdk.Stack, bool], None]:
    def build(stack: cdk.Stack, bad: bool) -> None:
        fn = function(stack, "Step")
        step = tasks.LambdaInvoke(
            stack,
            "Step1",
            lambda_function=fn,
            retry_on_service_exceptions=not jitter and bad,  # CDK's own retry: no jitter
            task_timeout=(
                None if bad and not task_timeout else sfn.Timeout.duration(cdk.Duration.seconds(20))
            ),
        )
        jittered(step)
        each = sfn.Map(
            stack,
            "EachLine",
            items_path="$.lines",
            max_concurrency=None if bad and not map_concurrency else 5,
        )
        each.item_processor(sfn.Pass(stack, "Line"))
        sfn.StateMachine(
            stack,
            "Machine",
            definition_body=sfn.DefinitionBody.from_chainable(step.next(each)),
            timeout=cdk.Duration.minutes(5),
        )

    return build


def _execution_timeout(stack: cdk.Stack, bad: bool) -> None:
    sfn.StateMachine(
        stack,
        "Machine",
        definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Nothing")),
        timeout=None if bad else cdk.Duration.minutes(1),
    )


def _async_invoke_config(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Worker")
    if bad:
        fn.configure_async_invoke(retry_attempts=0)
    else:
        async_safe(fn, stack)


def _sns_subscription(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Subscriber")
    async_safe(fn, stack)
    dlq = None if bad else dlq_of(stack, "DeliveryDlq")
    sns.Topic(stack, "Topic").add_subscription(
        subscriptions.LambdaSubscription(fn, dead_letter_queue=dlq)
    )


def _rule_target(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Target")
    async_safe(fn, stack)
    dlq = None if bad else dlq_of(stack, "TargetDlq")
    events.Rule(
        stack,
        "Nightly",
        schedule=events.Schedule.cron(hour="3", minute="0"),
        targets=[targets.LambdaFunction(fn, dead_letter_queue=dlq, retry_attempts=2)],
    )


def _async_function_without_destination(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Target")
    if not bad:
        async_safe(fn, stack)
    events.Rule(
        stack,
        "Nightly",
        schedule=events.Schedule.cron(hour="3", minute="0"),
        targets=[targets.LambdaFunction(fn, dead_letter_queue=dlq_of(stack, "TargetDlq"))],
    )


def _feeds_own_trigger(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Relay")
    source = queue(stack, "Inbox")
    fn.add_event_source(
        sources.SqsEventSource(source, report_batch_item_failures=True, max_concurrency=2)
    )
    (source if bad else queue(stack, "Outbox")).grant_send_messages(fn)


def _feeds_own_stream(stack: cdk.Stack, bad: bool) -> None:
    fn = function(stack, "Projector")
    table = dynamodb.Table(
        stack,
        "Table",
        partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
        stream=dynamodb.StreamViewType.NEW_IMAGE,
    )
    fn.add_event_source(
        sources.DynamoEventSource(
            table,
            starting_position=lambda_.StartingPosition.LATEST,
            retry_attempts=3,
            max_record_age=cdk.Duration.hours(1),
            bisect_batch_on_error=True,
            on_failure=sources.SqsDlq(dlq_of(stack, "StreamFailures")),
            parallelization_factor=1,
        )
    )
    if bad:
        table.grant_write_data(fn)
    else:
        table.grant_stream_read(fn)


def _alarm_metrics(scope: cdk.Stack, bad: bool) -> None:
    """A metric math alarm summing one metric per function: 11 breaks CloudWatch's limit.

    Built as the L1 resource: the L2 ``cloudwatch.Alarm`` already refuses more than 10 (see
    the test below); the guardrail covers what reaches the template another way (CfnAlarm,
    escape hatches, raw overrides)."""
    count = 11 if bad else 10
    metrics = [
        cloudwatch.CfnAlarm.MetricDataQueryProperty(
            id=f"m{i}",
            return_data=False,
            metric_stat=cloudwatch.CfnAlarm.MetricStatProperty(
                metric=cloudwatch.CfnAlarm.MetricProperty(
                    namespace="AWS/Lambda",
                    metric_name="Invocations",
                    dimensions=[
                        cloudwatch.CfnAlarm.DimensionProperty(name="FunctionName", value=f"fn{i}")
                    ],
                ),
                period=300,
                stat="Sum",
            ),
        )
        for i in range(count)
    ]
    total = cloudwatch.CfnAlarm.MetricDataQueryProperty(
        id="total", expression="+".join(f"m{i}" for i in range(count)), return_data=True
    )
    cloudwatch.CfnAlarm(
        scope,
        "Total",
        comparison_operator="GreaterThanThreshold",
        evaluation_periods=1,
        threshold=1,
        metrics=[*metrics, total],
    )


CASES = [
    Case("reserved-concurrency", "F05", "Fn/Resource", "ReservedConcurrentExecutions",
         _function_case("reserved_concurrent_executions")),
    Case("function-timeout", "F07", "Fn/Resource", "Timeout", _function_case("timeout")),
    Case("tracing", "F13", "Fn/Resource", "tracing", _function_case("tracing")),
    Case("log-retention", "F13", "Fn/Resource", "RetentionInDays", _function_case("log_group")),
    Case("recursive-loop", "F22", "Fn/Resource", "RecursiveLoop", _function_case("recursive_loop")),
    Case("queue-dlq", "F02/F17", "Plain/Resource", "RedrivePolicy", _queue_without_dlq),
    Case("visibility-timeout", "F07", "Source/Resource", "VisibilityTimeout 30s",
         _sqs_mapping(visibility_s=30)),
    Case("sqs-batch-failures", "F02", "SqsEventSource", "ReportBatchItemFailures",
         _sqs_mapping(report=False)),
    Case("sqs-max-concurrency", "F05", "SqsEventSource", "MaximumConcurrency",
         _sqs_mapping(concurrency=None)),
    Case("stream-mapping", "F15", "DynamoDBEventSource", "ParallelizationFactor", _stream_mapping),
    Case("task-timeout", "F07", "Machine/Resource", "'Step1' has no TimeoutSeconds",
         _state_machine(task_timeout=False)),
    Case("retry-jitter", "F03", "Machine/Resource", "JitterStrategy FULL",
         _state_machine(jitter=False)),
    Case("map-concurrency", "F05", "Machine/Resource", "'EachLine' has no MaxConcurrency",
         _state_machine(map_concurrency=False)),
    Case("execution-timeout", "F07", "Machine/Resource", "execution TimeoutSeconds",
         _execution_timeout),
    Case("async-invoke-config", "F17", "EventInvokeConfig", "OnFailure", _async_invoke_config),
    Case("sns-subscription-dlq", "F17", "Topic/", "RedrivePolicy", _sns_subscription),
    Case("rule-target-dlq", "F17", "Nightly/Resource", "DeadLetterConfig", _rule_target),
    Case("async-function-destination", "F17", "Target/Resource", "events.amazonaws.com",
         _async_function_without_destination),
    Case("queue-cycle", "F22", "Relay/Resource", "write to its own trigger", _feeds_own_trigger),
    Case("stream-cycle", "F22", "Projector/Resource", "write to its own trigger",
         _feeds_own_stream),
    Case("alarm-metric-limit", "F16", "Total", "uses 11 metrics", _alarm_metrics),
]  # fmt: skip


def guardrail_errors(build: Callable[[cdk.Stack, bool], None], *, bad: bool) -> list[str]:
    """Synthesize a guarded app; one line per reported violation (empty when synth passes)."""
    with tempfile.TemporaryDirectory() as outdir:
        app = cdk.App(outdir=outdir)
        build(cdk.Stack(app, "Guarded"), bad)
        apply_guardrails(app)
        try:
            app.synth()
        except RuntimeError as failure:
            if "ValidationFailed" not in str(failure):
                raise
            report = json.loads((Path(outdir) / "validation-report.json").read_text())
            return [
                f"{violation['description']} at {construct['constructPath']} "
                f"({construct['cloudFormationResource']['logicalId']})"
                for plugin in report["pluginReports"]
                for violation in plugin["violations"]
                for construct in violation["violatingConstructs"]
            ]
        return []


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_guardrail_fails_synth_naming_resource_and_catalogue_id(case: Case) -> None:
    # Given a stack that breaks exactly one rule, When it is synthesized
    errors = guardrail_errors(case.build, bad=True)

    # Then the error sits on that resource and names the catalogue id and the problem
    matching = [
        error
        for error in errors
        if error.startswith(f"[{case.catalogue_id}]")
        and case.path in error
        and case.message in error
    ]
    assert matching, f"no [{case.catalogue_id}] error on {case.path!r} in {errors}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_guardrail_passes_the_compliant_variant(case: Case) -> None:
    assert guardrail_errors(case.build, bad=False) == []


# -- the template-level API ----------------------------------------------------------------


def test_acknowledged_finding_with_reason_is_not_reported() -> None:
    def build(stack: cdk.Stack, bad: bool) -> None:
        fn = function(stack, "Provider", bad="reserved_concurrent_executions")
        acknowledge(fn, {"F05": "CDK-managed provider, runs once per deployment"})

    assert guardrail_errors(build, bad=True) == []


def test_marking_or_acknowledging_without_a_reason_is_refused() -> None:
    stack = cdk.Stack(cdk.App(), "NoReason")
    with pytest.raises(ValueError, match="reason"):
        mark_terminal_queue(sqs.Queue(stack, "Q"), " ")
    with pytest.raises(ValueError, match="reason"):
        acknowledge(sqs.Queue(stack, "Q2"), {"F02": ""})


def test_definition_with_tokens_outside_strings_is_parsed() -> None:
    # Given a DefinitionString whose Fn::Join puts a token where a JSON value is expected
    props = {
        "DefinitionString": {
            "Fn::Join": [
                "",
                [
                    '{"StartAt":"A","TimeoutSeconds":60,"States":{"A":{"Type":"Task","Resource":"',
                    {"Ref": "Fn"},
                    '","Parameters":{"n":',
                    {"Ref": "Count"},
                    '},"End":true}}}',
                ],
            ]
        }
    }

    definition = state_machine_definition(props)

    assert definition is not None
    assert definition["States"]["A"]["Resource"] == "__TOKEN_1__"
    assert definition["States"]["A"]["Parameters"] == {"n": "__TOKEN_3__"}


def test_unreadable_definition_fails_closed() -> None:
    template = {
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"DefinitionS3Location": {"Bucket": "b", "Key": "k"}},
            }
        }
    }

    assert check_template(template) == [
        Violation("F07", "Machine", "definition cannot be parsed: guardrails cannot check it")
    ]


def test_kinesis_mapping_with_infinite_retries_is_rejected() -> None:
    template = {
        "Resources": {
            "Mapping": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "EventSourceArn": "arn:aws:kinesis:eu-west-1:123456789012:stream/s",
                    "FunctionName": "imported",
                    "MaximumRetryAttempts": -1,
                    "MaximumRecordAgeInSeconds": 3600,
                    "BisectBatchOnFunctionError": True,
                    "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:x"}},
                    "ParallelizationFactor": 1,
                },
            }
        }
    }

    [violation] = check_template(template)

    assert violation.catalogue_id == "F15"
    assert "MaximumRetryAttempts (-1 = infinite)" in violation.message


def test_check_assembly_reads_synthesized_templates(tmp_path: Path) -> None:
    # Given a cloud assembly with one bad template (as `cdk synth` writes it)
    app = cdk.App(outdir=str(tmp_path), context={"aws:cdk:enable-path-metadata": True})
    stack = cdk.Stack(app, "Written")
    _function_case("timeout")(stack, True)
    app.synth()

    problems = check_assembly(tmp_path)

    assert len(problems) == 1
    assert problems[0].startswith("Written.template.json: [F07] Fn")
    assert "(Written/Fn/Resource)" in problems[0]


CDK_CLI = REPO / "node_modules" / ".bin" / "cdk"


@pytest.mark.skipif(not CDK_CLI.exists() or shutil.which("node") is None, reason="no CDK CLI")
def test_cdk_cli_synth_exits_non_zero_on_a_violation(tmp_path: Path) -> None:
    # Given an app whose only function has no timeout, guarded like infra/app.py does
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import aws_cdk as cdk
            from infra.guardrails import apply_guardrails
            from test_guardrails import function
            app = cdk.App()
            function(cdk.Stack(app, "Cli"), "Fn", bad="timeout")
            apply_guardrails(app)
            app.synth()
            """
        ),
        encoding="utf-8",
    )
    (tmp_path / "cdk.json").write_text(
        json.dumps({"app": f"{sys.executable} app.py"}), encoding="utf-8"
    )
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1"}

    # When the real CLI synthesizes it
    result = subprocess.run(  # fixed argv, no shell
        [str(CDK_CLI), "synth", "--no-notices", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    # Then it refuses, naming the catalogue id, the construct path and the logical id
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "[F07] function has no explicit Timeout" in output
    assert "Cli/Fn/Resource (Fn9270CBC0)" in output


def test_the_l2_alarm_itself_refuses_a_math_expression_over_the_metric_limit() -> None:
    """Issue 10, finding 8, checked: aws-cdk-lib's Alarm refuses 11 metrics at construction,
    so an L2 alarm fails synth already; the guardrail rule covers L1 alarms and overrides."""
    metrics = {f"m{i}": cloudwatch.Metric(namespace="N", metric_name=f"M{i}") for i in range(11)}
    stack = cdk.Stack(cdk.App(), "Limit")

    with pytest.raises(RuntimeError, match="more than 10 individual metrics"):
        cloudwatch.Alarm(
            stack,
            "Total",
            metric=cloudwatch.MathExpression(expression="+".join(metrics), using_metrics=metrics),
            threshold=1,
            evaluation_periods=1,
        )
