"""Hardening guardrail: synthesis fails when a resource breaks a rule of the catalogue.

Design
- The rules are small pure functions over a CloudFormation template dict (``check_template``),
  so the same code checks every synthesized template during ``cdk synth`` and any
  ``cdk.out/*.template.json`` afterwards (``python -m infra.guardrails cdk.out``).
- During synthesis they run as a CDK policy-validation plugin (``GuardrailPlugin``, registered
  by ``apply_guardrails(app)`` through ``cdk.Validations.of(app).add_plugins``). CDK hands the
  plugin the templates exactly as written, and any violation stops synthesis: ``cdk synth``
  prints each one with the construct path, the logical id and the catalogue id (the rule name)
  and exits 1; ``app.synth()`` raises and writes ``validation-report.json`` into the outdir.

Why not a CDK Aspect with ``Annotations.add_error`` (checked on aws-cdk-lib 2.275): an aspect
would have to rebuild each resource's CloudFormation from Python. ``_toCloudFormation`` is
internal and jsii refuses to call it; ``_cfn_properties`` crosses jsii typed ``any``, so
``Lazy`` values inside it (DynamoDB index lists, EventBridge targets, SNS settings) arrive as
plain objects, and re-rendering them fails with "should be a list"; raw overrides are
invisible to it as well. The plugin reads the real template, so there is nothing to rebuild.

Exceptions are explicit and carry their reason next to them (never a silent skip):
- ``mark_terminal_queue(queue, reason)``: a queue that is the end of the line (the saga's
  needs-attention queue) needs no DLQ of its own.
- ``acknowledge(construct, {"F05": "reason"})``: accepted finding on one resource, e.g. a
  CDK-managed provider function whose properties we do not control.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

import aws_cdk as cdk
import jsii
from constructs import Construct, IConstruct

TERMINAL_QUEUE_KEY: Final = "hardening:terminal-queue"
ACKNOWLEDGED_KEY: Final = "hardening:guardrail-acknowledged"
CDK_PATH_KEY: Final = "aws:cdk:path"

# CloudFormation / Lambda defaults, used when a property is absent.
DEFAULT_LAMBDA_TIMEOUT_S: Final = 3
DEFAULT_VISIBILITY_TIMEOUT_S: Final = 30
VISIBILITY_TIMEOUT_FACTOR: Final = 6  # AWS guidance for SQS-triggered functions (F07)

FUNCTION: Final = "AWS::Lambda::Function"
ALIAS: Final = "AWS::Lambda::Alias"
VERSION: Final = "AWS::Lambda::Version"
QUEUE: Final = "AWS::SQS::Queue"
TOPIC: Final = "AWS::SNS::Topic"
TABLE: Final = "AWS::DynamoDB::Table"
KINESIS_STREAM: Final = "AWS::Kinesis::Stream"
MAPPING: Final = "AWS::Lambda::EventSourceMapping"
STATE_MACHINE: Final = "AWS::StepFunctions::StateMachine"
STREAM_SOURCE_TYPES: Final = frozenset(
    {TABLE, "AWS::DynamoDB::GlobalTable", KINESIS_STREAM, "AWS::Kinesis::StreamConsumer"}
)
# Principals that invoke Lambda asynchronously: failures after the two built-in retries are
# dropped unless an on-failure destination or DLQ exists (F17).
ASYNC_PRINCIPALS: Final = frozenset(
    {
        "sns.amazonaws.com",
        "events.amazonaws.com",
        "s3.amazonaws.com",
        "scheduler.amazonaws.com",
        "logs.amazonaws.com",
        "iot.amazonaws.com",
    }
)
# Writes that feed a trigger, by the resource type they land in (F22).
WRITE_ACTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    QUEUE: ("sqs:SendMessage", "sqs:SendMessageBatch"),
    TOPIC: ("sns:Publish", "sns:PublishBatch"),
    KINESIS_STREAM: ("kinesis:PutRecord", "kinesis:PutRecords"),
    TABLE: (
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ),
}

Json = Any  # a CloudFormation value: str, number, bool, list or dict (intrinsics included)


class Violation(NamedTuple):
    catalogue_id: str
    logical_id: str
    message: str


class Resources:
    """Read-only view of a template's Resources with the lookups the rules share."""

    def __init__(self, template: Mapping[str, Json]) -> None:
        self._all: Mapping[str, Mapping[str, Json]] = template.get("Resources") or {}

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def type_of(self, logical_id: str) -> str | None:
        resource = self._all.get(logical_id)
        return None if resource is None else str(resource.get("Type"))

    def props(self, logical_id: str) -> Mapping[str, Json]:
        return self._all.get(logical_id, {}).get("Properties") or {}

    def metadata(self, logical_id: str) -> Mapping[str, Json]:
        return self._all.get(logical_id, {}).get("Metadata") or {}

    def of_type(self, *types: str) -> Iterator[tuple[str, Mapping[str, Json]]]:
        for logical_id, resource in self._all.items():
            if resource.get("Type") in types:
                yield logical_id, resource.get("Properties") or {}

    def referenced(self, value: Json, *types: str) -> list[str]:
        """Logical ids (of the given types) that ``value`` points at via Ref/GetAtt/Sub."""
        return [ref for ref in references(value) if not types or self.type_of(ref) in types]

    def function_of(self, value: Json) -> str | None:
        """The function a FunctionName/Arn expression names, through an alias or version."""
        for ref in references(value):
            kind = self.type_of(ref)
            if kind == FUNCTION:
                return ref
            if kind in (ALIAS, VERSION):
                return self.function_of(self.props(ref).get("FunctionName"))
        return None


_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")


def references(value: Json) -> list[str]:
    """Every logical id referenced anywhere inside a CloudFormation value, in order."""
    found: list[str] = []
    if isinstance(value, list):
        for item in value:
            found += references(item)
    elif isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.append(inner)
            elif key == "Fn::GetAtt":
                target = inner.split(".")[0] if isinstance(inner, str) else inner[0]
                found.append(str(target))
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found += _SUB_REFERENCE.findall(text)
                found += [] if isinstance(inner, str) else references(inner[1:])
            else:
                found += references(inner)
    return [ref for ref in found if not ref.startswith("AWS::")]


def _path(mapping: Json, *keys: str) -> Json:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


# -- Lambda functions --------------------------------------------------------------------------


def function_has_reserved_concurrency(res: Resources) -> Iterator[Violation]:
    for fn, props in res.of_type(FUNCTION):
        if props.get("ReservedConcurrentExecutions") is None:
            yield Violation("F05", fn, "function has no ReservedConcurrentExecutions")


def function_has_timeout(res: Resources) -> Iterator[Violation]:
    for fn, props in res.of_type(FUNCTION):
        if props.get("Timeout") is None:
            yield Violation("F07", fn, "function has no explicit Timeout")


def function_has_active_tracing(res: Resources) -> Iterator[Violation]:
    for fn, props in res.of_type(FUNCTION):
        if _path(props, "TracingConfig", "Mode") != "Active":
            yield Violation("F13", fn, "function tracing is not Active (TracingConfig.Mode)")


def function_has_log_retention(res: Resources) -> Iterator[Violation]:
    """An explicit log group with retention, or a (legacy) retention set on /aws/lambda/<fn>."""
    retained = {
        group
        for group, props in res.of_type("AWS::Logs::LogGroup")
        if props.get("RetentionInDays") is not None
    }
    legacy = {
        ref
        for _, props in res.of_type("Custom::LogRetention", "AWS::Logs::LogGroup")
        if props.get("RetentionInDays") is not None
        for ref in res.referenced(props.get("LogGroupName"), FUNCTION)
    }
    for fn, props in res.of_type(FUNCTION):
        explicit = res.referenced(_path(props, "LoggingConfig", "LogGroup"))
        if fn not in legacy and not any(group in retained for group in explicit):
            yield Violation(
                "F13",
                fn,
                "function logs to no log group with RetentionInDays "
                "(set LoggingConfig.LogGroup to a LogGroup with a retention)",
            )


def function_terminates_recursive_loops(res: Resources) -> Iterator[Violation]:
    for fn, props in res.of_type(FUNCTION):
        if props.get("RecursiveLoop") != "Terminate":
            yield Violation("F22", fn, "function does not set RecursiveLoop: Terminate")


# -- SQS queues --------------------------------------------------------------------------------


def _failure_targets(res: Resources) -> set[str]:
    """Logical ids used as a DLQ or on-failure destination anywhere in the template."""
    targets: list[Json] = []
    targets += [_path(p, "RedrivePolicy", "deadLetterTargetArn") for _, p in res.of_type(QUEUE)]
    targets += [_path(p, "DeadLetterConfig", "TargetArn") for _, p in res.of_type(FUNCTION)]
    targets += [
        _path(p, "DestinationConfig", "OnFailure", "Destination")
        for _, p in res.of_type("AWS::Lambda::EventInvokeConfig", MAPPING)
    ]
    targets += [
        _path(p, "RedrivePolicy", "deadLetterTargetArn")
        for _, p in res.of_type("AWS::SNS::Subscription")
    ]
    targets += [
        _path(target, "DeadLetterConfig", "Arn")
        for _, p in res.of_type("AWS::Events::Rule")
        for target in p.get("Targets") or []
    ]
    return {ref for target in targets for ref in references(target)}


def queue_has_dead_letter_queue(res: Resources) -> Iterator[Violation]:
    dead_letter_queues = _failure_targets(res)
    for queue, props in res.of_type(QUEUE):
        if props.get("RedrivePolicy") is not None or queue in dead_letter_queues:
            continue
        reason = res.metadata(queue).get(TERMINAL_QUEUE_KEY)
        if isinstance(reason, str) and reason.strip():
            continue
        yield Violation(
            "F02/F17",
            queue,
            "queue has no RedrivePolicy (DLQ), is no other queue's DLQ and is not marked "
            f"terminal (metadata {TERMINAL_QUEUE_KEY!r} with a reason)",
        )


# -- event source mappings ---------------------------------------------------------------------


def _mapping_source(res: Resources, props: Mapping[str, Json]) -> str:
    """'sqs', 'stream' or 'other' for an event source mapping."""
    arn = props.get("EventSourceArn")
    for ref in references(arn):
        kind = res.type_of(ref)
        if kind == QUEUE:
            return "sqs"
        if kind in STREAM_SOURCE_TYPES:
            return "stream"
    text = json.dumps(arn)
    if ":sqs:" in text:
        return "sqs"
    if ":kinesis:" in text or ":dynamodb:" in text:
        return "stream"
    return "other"


def _mappings(res: Resources, source: str) -> Iterator[tuple[str, Mapping[str, Json]]]:
    for mapping, props in res.of_type(MAPPING):
        if _mapping_source(res, props) == source:
            yield mapping, props


def sqs_mapping_reports_batch_item_failures(res: Resources) -> Iterator[Violation]:
    for mapping, props in _mappings(res, "sqs"):
        if "ReportBatchItemFailures" not in (props.get("FunctionResponseTypes") or []):
            yield Violation(
                "F02", mapping, "SQS mapping lacks FunctionResponseTypes ReportBatchItemFailures"
            )


def sqs_mapping_has_maximum_concurrency(res: Resources) -> Iterator[Violation]:
    for mapping, props in _mappings(res, "sqs"):
        if _path(props, "ScalingConfig", "MaximumConcurrency") is None:
            yield Violation("F05", mapping, "SQS mapping lacks ScalingConfig.MaximumConcurrency")


def queue_visibility_covers_consumer(res: Resources) -> Iterator[Violation]:
    for mapping, props in _mappings(res, "sqs"):
        fn = res.function_of(props.get("FunctionName"))
        queues = res.referenced(props.get("EventSourceArn"), QUEUE)
        if fn is None or not queues:
            continue  # imported function or queue: not judged from this template
        timeout = res.props(fn).get("Timeout", DEFAULT_LAMBDA_TIMEOUT_S)
        visibility = res.props(queues[0]).get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT_S)
        if not (isinstance(timeout, int) and isinstance(visibility, int)):
            continue  # a token we cannot evaluate here
        if visibility < VISIBILITY_TIMEOUT_FACTOR * timeout:
            yield Violation(
                "F07",
                queues[0],
                f"VisibilityTimeout {visibility}s < {VISIBILITY_TIMEOUT_FACTOR} x "
                f"{timeout}s timeout of consumer {fn} (mapping {mapping})",
            )


STREAM_MAPPING_SETTINGS: Final = (
    "MaximumRetryAttempts",
    "MaximumRecordAgeInSeconds",
    "BisectBatchOnFunctionError",
    "DestinationConfig.OnFailure",
    "ParallelizationFactor",
)


def stream_mapping_is_bounded(res: Resources) -> Iterator[Violation]:
    """Stream defaults retry a record forever and block its shard (F15)."""
    for mapping, props in _mappings(res, "stream"):
        missing = [s for s in STREAM_MAPPING_SETTINGS if _path(props, *s.split(".")) is None]
        if props.get("BisectBatchOnFunctionError") is False:
            missing.append("BisectBatchOnFunctionError (false)")
        for unbounded in ("MaximumRetryAttempts", "MaximumRecordAgeInSeconds"):
            if props.get(unbounded) == -1:
                missing.append(f"{unbounded} (-1 = infinite)")
        if missing:
            yield Violation(
                "F15", mapping, f"stream mapping does not set {', '.join(sorted(missing))}"
            )


# -- Step Functions ----------------------------------------------------------------------------


def _join_with_placeholders(parts: list[Json]) -> str:
    """Concatenate an Fn::Join of the definition, replacing tokens with JSON-safe text."""
    text = ""
    for index, part in enumerate(parts):
        if isinstance(part, str):
            text += part
            continue
        # Inside a JSON string (odd number of unescaped quotes so far) a bare word is safe;
        # outside one the placeholder must itself be a string.
        inside_string = len(re.findall(r'(?<!\\)"', text)) % 2 == 1
        placeholder = f"__TOKEN_{index}__"
        text += placeholder if inside_string else json.dumps(placeholder)
    return text


def state_machine_definition(props: Mapping[str, Json]) -> Mapping[str, Json] | None:
    """The ASL of an AWS::StepFunctions::StateMachine, or None when it cannot be read."""
    if isinstance(props.get("Definition"), Mapping):
        return props["Definition"]  # type: ignore[no-any-return]
    body = props.get("DefinitionString")
    if isinstance(body, Mapping) and "Fn::Join" in body:
        separator, parts = body["Fn::Join"]
        body = _join_with_placeholders(parts) if separator == "" else None
    elif isinstance(body, Mapping) and "Fn::Sub" in body:
        sub = body["Fn::Sub"]
        body = sub if isinstance(sub, str) else sub[0]
    if not isinstance(body, str):
        return None
    try:
        definition = json.loads(body)
    except ValueError:
        return None
    return definition if isinstance(definition, Mapping) else None


def iter_states(definition: Mapping[str, Json]) -> Iterator[tuple[str, Mapping[str, Json]]]:
    """Every state, including those inside Parallel branches and Map processors."""
    for name, state in (definition.get("States") or {}).items():
        yield name, state
        for branch in state.get("Branches") or []:
            yield from iter_states(branch)
        for key in ("ItemProcessor", "Iterator"):
            if isinstance(state.get(key), Mapping):
                yield from iter_states(state[key])


def _state_machines(
    res: Resources,
) -> Iterator[tuple[str, Mapping[str, Json] | None]]:
    for machine, props in res.of_type(STATE_MACHINE):
        yield machine, state_machine_definition(props)


def state_machine_is_readable(res: Resources) -> Iterator[Violation]:
    for machine, definition in _state_machines(res):
        if definition is None:
            yield Violation(
                "F07", machine, "definition cannot be parsed: guardrails cannot check it"
            )


def state_machine_has_execution_timeout(res: Resources) -> Iterator[Violation]:
    for machine, definition in _state_machines(res):
        if definition is not None and definition.get("TimeoutSeconds") is None:
            yield Violation("F07", machine, "state machine has no execution TimeoutSeconds")


def task_states_have_timeouts(res: Resources) -> Iterator[Violation]:
    for machine, definition in _state_machines(res):
        for name, state in iter_states(definition or {}):
            if state.get("Type") != "Task":
                continue
            if state.get("TimeoutSeconds") is None and state.get("TimeoutSecondsPath") is None:
                yield Violation("F07", machine, f"Task state {name!r} has no TimeoutSeconds")


def retries_are_jittered_and_capped(res: Resources) -> Iterator[Violation]:
    for machine, definition in _state_machines(res):
        for name, state in iter_states(definition or {}):
            for retrier in state.get("Retry") or []:
                if (
                    retrier.get("JitterStrategy") != "FULL"
                    or retrier.get("MaxDelaySeconds") is None
                ):
                    errors = retrier.get("ErrorEquals")
                    yield Violation(
                        "F03",
                        machine,
                        f"state {name!r} Retry {errors} lacks JitterStrategy FULL "
                        "and/or MaxDelaySeconds",
                    )


def map_states_have_max_concurrency(res: Resources) -> Iterator[Violation]:
    for machine, definition in _state_machines(res):
        for name, state in iter_states(definition or {}):
            if state.get("Type") != "Map" or state.get("MaxConcurrencyPath") is not None:
                continue
            if not state.get("MaxConcurrency"):  # absent or 0 = unlimited
                yield Violation("F05", machine, f"Map state {name!r} has no MaxConcurrency")


# -- asynchronous paths (F17) ------------------------------------------------------------------


def event_invoke_config_has_on_failure(res: Resources) -> Iterator[Violation]:
    for config, props in res.of_type("AWS::Lambda::EventInvokeConfig"):
        if _path(props, "DestinationConfig", "OnFailure", "Destination") is None:
            yield Violation("F17", config, "async invoke config has no OnFailure destination")


def subscription_has_dead_letter_queue(res: Resources) -> Iterator[Violation]:
    for subscription, props in res.of_type("AWS::SNS::Subscription"):
        if _path(props, "RedrivePolicy", "deadLetterTargetArn") is None:
            yield Violation("F17", subscription, "SNS subscription has no RedrivePolicy (DLQ)")


def rule_targets_have_dead_letter_queue(res: Resources) -> Iterator[Violation]:
    for rule, props in res.of_type("AWS::Events::Rule"):
        for target in props.get("Targets") or []:
            if _path(target, "DeadLetterConfig", "Arn") is None:
                yield Violation(
                    "F17", rule, f"EventBridge target {target.get('Id')!r} has no DeadLetterConfig"
                )


def async_invoked_function_has_failure_destination(res: Resources) -> Iterator[Violation]:
    """A function another service invokes asynchronously must keep what finally fails."""
    covered = {
        fn
        for _, props in res.of_type("AWS::Lambda::EventInvokeConfig")
        if _path(props, "DestinationConfig", "OnFailure", "Destination") is not None
        for fn in [res.function_of(props.get("FunctionName"))]
        if fn is not None
    }
    covered |= {
        fn for fn, props in res.of_type(FUNCTION) if _path(props, "DeadLetterConfig", "TargetArn")
    }
    reported: set[str] = set()
    for _, props in res.of_type("AWS::Lambda::Permission"):
        fn = res.function_of(props.get("FunctionName"))
        if props.get("Principal") not in ASYNC_PRINCIPALS or fn is None:
            continue
        if fn not in covered and fn not in reported:
            reported.add(fn)
            yield Violation(
                "F17",
                fn,
                f"invoked asynchronously by {props.get('Principal')} without an OnFailure "
                "destination (EventInvokeConfig) or DeadLetterConfig",
            )


# -- event-graph cycles (F22) ------------------------------------------------------------------


def _policy_documents_of_role(res: Resources, role: str) -> Iterator[Json]:
    for _, props in res.of_type("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        if role in res.referenced(props.get("Roles")):
            yield props.get("PolicyDocument")
    for policy in res.props(role).get("Policies") or []:
        yield policy.get("PolicyDocument")


def _allowed_statements(document: Json) -> Iterator[Mapping[str, Json]]:
    statements = _path(document, "Statement") or []
    for statement in statements if isinstance(statements, list) else [statements]:
        if statement.get("Effect") == "Allow":
            yield statement


def _as_list(value: Json) -> list[Json]:
    return value if isinstance(value, list) else [value]


def _writes_of_function(res: Resources, fn: str) -> set[str]:
    """Queues, topics, streams and tables the function's role may write to."""
    targets: set[str] = set()
    for role in res.referenced(res.props(fn).get("Role"), "AWS::IAM::Role"):
        for document in _policy_documents_of_role(res, role):
            for statement in _allowed_statements(document):
                actions = [str(a).lower() for a in _as_list(statement.get("Action"))]
                resources = _as_list(statement.get("Resource"))
                for kind, writes in WRITE_ACTIONS.items():
                    if not any(fnmatch.fnmatchcase(w.lower(), a) for a in actions for w in writes):
                        continue
                    if "*" in resources:  # may write anywhere: conservatively, everywhere
                        targets |= {ref for ref, _ in res.of_type(kind)}
                    targets |= set(res.referenced(resources, kind))
    return targets


def _event_graph(res: Resources) -> dict[str, set[str]]:
    """Edges resource -> what it triggers, and function -> what it writes to."""
    edges: dict[str, set[str]] = {}
    for _, props in res.of_type(MAPPING):
        fn = res.function_of(props.get("FunctionName"))
        for source in res.referenced(props.get("EventSourceArn"), QUEUE, *STREAM_SOURCE_TYPES):
            if fn is not None:
                edges.setdefault(source, set()).add(fn)
    for _, props in res.of_type("AWS::SNS::Subscription"):
        endpoint = res.function_of(props.get("Endpoint")) or next(
            iter(res.referenced(props.get("Endpoint"), QUEUE)), None
        )
        for topic in res.referenced(props.get("TopicArn"), TOPIC):
            if endpoint is not None:
                edges.setdefault(topic, set()).add(endpoint)
    for fn, _ in res.of_type(FUNCTION):
        edges.setdefault(fn, set()).update(_writes_of_function(res, fn))
    return edges


def _cycle_from(edges: Mapping[str, set[str]], start: str) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def function_does_not_feed_its_trigger(res: Resources) -> Iterator[Violation]:
    edges = _event_graph(res)
    for fn, _ in res.of_type(FUNCTION):
        cycle = _cycle_from(edges, fn)
        if cycle is not None:
            yield Violation(
                "F22",
                fn,
                f"function can write to its own trigger: {' -> '.join(cycle)}",
            )


# -- CloudWatch alarms ------------------------------------------------------------------------

# CloudWatch: an alarm on a metric math expression may use at most 10 metrics (a quota that
# cannot be raised). CloudFormation accepts the template and the deploy fails (issue 10,
# finding 8); a stack that sums one metric per function reaches it by adding a function.
ALARM_METRICS_LIMIT: Final = 10


def alarm_fits_the_metric_limit(res: Resources) -> Iterator[Violation]:
    for alarm, props in res.of_type("AWS::CloudWatch::Alarm"):
        used = [m for m in props.get("Metrics") or () if "MetricStat" in m]
        if len(used) > ALARM_METRICS_LIMIT:
            yield Violation(
                "F16",
                alarm,
                f"alarm uses {len(used)} metrics; CloudWatch allows {ALARM_METRICS_LIMIT} per "
                "metric math alarm (the deploy would fail): split it or aggregate per metric",
            )


Rule = Callable[[Resources], Iterable[Violation]]

RULES: Final[tuple[Rule, ...]] = (
    function_has_reserved_concurrency,
    function_has_timeout,
    function_has_active_tracing,
    function_has_log_retention,
    function_terminates_recursive_loops,
    queue_has_dead_letter_queue,
    queue_visibility_covers_consumer,
    sqs_mapping_reports_batch_item_failures,
    sqs_mapping_has_maximum_concurrency,
    stream_mapping_is_bounded,
    state_machine_is_readable,
    state_machine_has_execution_timeout,
    task_states_have_timeouts,
    retries_are_jittered_and_capped,
    map_states_have_max_concurrency,
    event_invoke_config_has_on_failure,
    subscription_has_dead_letter_queue,
    rule_targets_have_dead_letter_queue,
    async_invoked_function_has_failure_destination,
    function_does_not_feed_its_trigger,
    alarm_fits_the_metric_limit,
)


def _acknowledged(res: Resources, violation: Violation) -> bool:
    reasons = res.metadata(violation.logical_id).get(ACKNOWLEDGED_KEY) or {}
    ids = {violation.catalogue_id, *violation.catalogue_id.split("/")}
    return any(isinstance(r, str) and r.strip() for i, r in reasons.items() if i in ids)


def check_template(template: Mapping[str, Json]) -> list[Violation]:
    """All violations in one CloudFormation template, minus acknowledged ones."""
    res = Resources(template)
    found = [violation for rule in RULES for violation in rule(res)]
    return [violation for violation in found if not _acknowledged(res, violation)]


def describe(violation: Violation, template: Mapping[str, Json]) -> str:
    path = Resources(template).metadata(violation.logical_id).get(CDK_PATH_KEY)
    where = f"{violation.logical_id} ({path})" if path else violation.logical_id
    return f"[{violation.catalogue_id}] {where}: {violation.message}"


# -- CDK integration ---------------------------------------------------------------------------

PLUGIN_NAME: Final = "hardening-guardrails"
PLUGIN_VERSION: Final = "1.0.0"
CATALOGUE_IDS: Final = ("F02", "F02/F17", "F03", "F05", "F07", "F13", "F15", "F17", "F22")


@jsii.implements(cdk.IPolicyValidationPlugin)
class GuardrailPlugin:
    """CDK policy-validation plugin: runs ``check_template`` on every synthesized template.

    CDK calls ``validate`` after writing the templates; any violation makes synthesis fail
    (``cdk synth`` exits 1, ``app.synth()`` raises), and the report names each resource by
    construct path and logical id, the rule (the catalogue id) and the problem.
    """

    @property
    def name(self) -> str:
        return PLUGIN_NAME

    @property
    def version(self) -> str:
        return PLUGIN_VERSION

    @property
    def rule_ids(self) -> list[str]:
        return list(CATALOGUE_IDS)

    def validate(self, context: cdk.IPolicyValidationContext) -> cdk.PolicyValidationPluginReport:
        violations: list[cdk.PolicyViolation] = []
        for stack in context.stack_templates:
            template = json.loads(Path(stack.template_path).read_text(encoding="utf-8"))
            violations += [
                cdk.PolicyViolation(
                    rule_name=violation.catalogue_id,
                    description=f"[{violation.catalogue_id}] {violation.message}",
                    violating_resources=[
                        cdk.PolicyViolatingResource(
                            locations=[],
                            resource_logical_id=violation.logical_id,
                            template_path=stack.template_path,
                        )
                    ],
                )
                for violation in check_template(template)
            ]
        return cdk.PolicyValidationPluginReport(
            success=not violations, violations=violations, plugin_version=PLUGIN_VERSION
        )


def apply_guardrails(scope: Construct) -> None:
    """Register the guardrail on an app or stage (infra/app.py calls it on the app)."""
    cdk.Validations.of(scope).add_plugins(GuardrailPlugin())


def mark_terminal_queue(queue: IConstruct, reason: str) -> None:
    """Declare a queue the end of an asynchronous path (it needs no DLQ), with the reason."""
    if not reason.strip():
        raise ValueError("a terminal queue needs a reason")
    _cfn_resource(queue).add_metadata(TERMINAL_QUEUE_KEY, reason)


def acknowledge(construct: IConstruct, reasons: Mapping[str, str]) -> None:
    """Accept findings on one resource, ``{catalogue id: reason}``; empty reasons are refused."""
    if not reasons or not all(reason.strip() for reason in reasons.values()):
        raise ValueError("every acknowledged guardrail finding needs a reason")
    resource = _cfn_resource(construct)
    merged = dict(resource.get_metadata(ACKNOWLEDGED_KEY) or {})
    merged.update(reasons)
    resource.add_metadata(ACKNOWLEDGED_KEY, merged)


def _cfn_resource(construct: IConstruct) -> cdk.CfnResource:
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to mark")
    return resource


# -- command line: check a synthesized cloud assembly -------------------------------------------


def check_assembly(cdk_out: Path) -> list[str]:
    """Violations in every ``*.template.json`` of a cloud assembly, described."""
    problems: list[str] = []
    for path in sorted(cdk_out.glob("**/*.template.json")):
        template = json.loads(path.read_text(encoding="utf-8"))
        problems += [f"{path.name}: {describe(v, template)}" for v in check_template(template)]
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    problems = check_assembly(Path(args[0] if args else "cdk.out"))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
