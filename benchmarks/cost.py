"""Cost model: dollars per 1M orders, fixed dollars per month, and the budget they add up to.

``python -m benchmarks.cost [--stage dev|prod] [--profile PATH] [--template PATH]
[--compensated-share 0.05] [--markdown]`` prints, for Step Functions Standard and Express side
by side, what 1M orders cost line by line, what the stage costs per month with no orders, and
the monthly budget derived from both (``monthly_budget_usd`` in infra/config.py must equal it;
tests/benchmarks/test_cost.py checks). Prices: benchmarks/prices.py (us-east-1, on demand, no
free tiers). Functions other code calls: ``load_template``, ``load_profile``,
``cost_per_million``, ``fixed_monthly``, ``monthly_budget``, ``derive_budget``,
``render_markdown``.

Two inputs, kept apart on purpose:

* **What the template decides** is read from the synthesized template (``cdk.out`` for dev,
  ``cdk.out.prod`` for prod; ``make synth``), never from infra/config.py: each function's
  MemorySize, Architectures, log level (POWERTOOLS_LOG_LEVEL, else LOG_LEVEL, else its
  LoggingConfig) and log group retention; tracing and X-Ray sampling rules; the state machine's
  type, log level, log retention and TimeoutSeconds; the API stage's access log and detailed
  metrics; NAT gateways, public IPv4 addresses, interface endpoints x subnets, the DynamoDB
  gateway endpoint; the RDS instance class, Multi-AZ, storage; the RDS Proxy; provisioned
  concurrency; the WAF web ACL and its rules; alarms and their metrics; dashboards; KMS keys;
  secrets; SQS event source mappings; custom metrics (metric filters, alarmed EMF metrics).
  Prices of something the table does not know (an instance class, an AWS call) are an error,
  not a guess.
* **What an order does** is the *order profile*: ``docs/performance.json``, key
  ``"order_profile"``, when that file exists (``--profile`` reads another file of the same
  shape), else ``CURRENT_PROFILE`` below. The loader is strict: a missing or unknown key, or a
  value that is not a non-negative number, is a ``ProfileError`` naming it. Shape::

    {"order_profile": {
      "happy":       {...one order path...},
      "compensated": {...one order path...}}}

  and one order path (every value a number, or a flat object of numbers)::

    "invocations":          {"<function>": n}   Lambda invocations of the POST and the saga
                                                (function = logical name: Api, Intake, ...)
    "billed_ms":            {"<function>": ms}  billed duration of one such invocation
    "aws_calls":            {"<service>:<Operation>": n}  calls the functions make
                                                (dynamodb:PutItem, sqs:SendMessage, ...)
    "state_transitions":    n    states entered by the execution (Standard bills these)
    "execution_ms":         ms   execution duration (Express bills it, 100 ms steps)
    "api_requests":         {"POST": n, "GET": n}  requests through API Gateway; each GET
                                                is one more Api invocation
    "get_billed_ms":        ms   billed duration of the Api invocation of one GET
    "sqs_esm_requests_per_message": n  ReceiveMessage + DeleteMessage(Batch) the event source
                                                mapping makes per message, batch amortised
    "log_bytes_per_invocation": {"DEBUG"|"INFO"|"WARNING"|"ERROR": bytes}  function log bytes
                                                of one invocation at that level, platform
                                                lines included
    "execution_log_bytes":  {"ALL"|"ERROR"|"FATAL"|"OFF": bytes}  state machine log bytes
                                                of one execution at that level
    "access_log_bytes_per_request": bytes  one API Gateway access log line
    "traces":               n    X-Ray traces an order starts (before sampling)
    "aws_call_bytes":       bytes  request + response of one AWS call (NAT / endpoint bytes)
    "provider_bytes":       bytes  to and from the payment provider (through the NAT)
    "egress_bytes":         bytes  leaving AWS to the internet (API responses, provider calls)

The committed numbers: the *counts* are measured on the local stack (issue 11: a happy order
makes 12 AWS calls, 10 of them DynamoDB idempotency writes = 1 PutItem + 1 UpdateItem for each
of place_order, start_saga, reserve_inventory, take_payment, confirm_order; 1 SendMessage; 1
StartExecution; 4 states entered). The compensated path is a declined payment, counted from
infra/saga.py: ReserveInventory, TakePayment (PaymentDeclined, caught), RefundPayment,
ReleaseInventory, MarkOrderFailed, OrderFailed = 6 states entered; take_payment's idempotency
record is deleted when it raises (Powertools), so PutItem 7, UpdateItem 6, DeleteItem 1.
**Assumptions, not measurements**: 2 status GETs per order; the event source mapping's
receive + delete per message (batches of 1, the pessimistic low-traffic case); billed
durations, log, trace and byte sizes (estimates until ``make bench`` measures them); the
compensated share of orders (``COMPENSATED_SHARE``, 5 %); Express billed at 64 MB (the state
and the definition are far below it).

Not modelled (small, or not per order): free tiers; INIT (cold start) billing; DynamoDB
storage and PITR (records expire after a day); RDS backups (free up to the database's size);
Performance Insights (7-day free tier); RDS and VPC flow log volumes; Secrets Manager and KMS
API calls (cached secrets; SSE-SQS needs no KMS); Cognito (billed per active user, not order);
SNS and Budgets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from benchmarks import prices as P
from infra.service import this_service

Workflow = Literal["STANDARD", "EXPRESS"]
WORKFLOWS: Final[tuple[Workflow, ...]] = ("STANDARD", "EXPRESS")
STAGES: Final = ("dev", "prod")

ROOT: Final = Path(__file__).resolve().parent.parent
TEMPLATES: Final = {
    "dev": this_service().template_path("dev", ROOT),
    "prod": this_service().template_path("prod", ROOT),
}
PROFILE_FILE: Final = ROOT / "docs" / "performance.json"
PROFILE_KEY: Final = "order_profile"
PATHS: Final = ("happy", "compensated")

# Share of orders that take the compensation path (a declined payment). An assumption: the
# F08 alarm tolerates 20 % failed executions; 5 % is a plausible decline rate.
COMPENSATED_SHARE: Final = 0.05
# Budget = (fixed + expected orders x cost per order) x BUDGET_HEADROOM, rounded up. AWS Budgets
# notifies at 80 % of actual spend (infra/monitoring.py), so the expected month must sit below
# 80 % of the budget: 1.5 puts it at 67 %, leaving a 20 % overrun before anyone is paged.
BUDGET_HEADROOM: Final = 1.5
MILLION: Final = 1_000_000

FUNCTION_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
EXECUTION_LEVELS: Final = ("ALL", "ERROR", "FATAL", "OFF")
# Lambda's and Powertools' level names mapped onto the profile's four.
_LEVEL_ALIASES: Final = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "ERROR", "CRITICAL": "ERROR"}
# REST API detailed metrics per method (Count, Latency, IntegrationLatency, 4XX, 5XX, cache hit
# and miss), billed as custom metrics: unverified here.
APIGW_DETAILED_METRICS_PER_METHOD: Final = 7


class ProfileError(ValueError):
    """The order profile is missing a key, has an unknown one, or a value is not a number."""


class TemplateError(ValueError):
    """The template has something the model or the price table cannot price."""


# --------------------------------------------------------------------------- order profile


@dataclass(frozen=True)
class OrderPath:
    """What one order on one path does (the module docstring explains each field)."""

    invocations: Mapping[str, float]
    billed_ms: Mapping[str, float]
    aws_calls: Mapping[str, float]
    state_transitions: float
    execution_ms: float
    api_requests: Mapping[str, float]
    get_billed_ms: float
    sqs_esm_requests_per_message: float
    log_bytes_per_invocation: Mapping[str, float]
    execution_log_bytes: Mapping[str, float]
    access_log_bytes_per_request: float
    traces: float
    aws_call_bytes: float
    provider_bytes: float
    egress_bytes: float


@dataclass(frozen=True)
class OrderProfile:
    happy: OrderPath
    compensated: OrderPath

    def path(self, name: str) -> OrderPath:
        return {"happy": self.happy, "compensated": self.compensated}[name]


# Keys whose value is an object, and the keys that object must have (None: any names).
_MAPPING_KEYS: Final[Mapping[str, tuple[str, ...] | None]] = {
    "invocations": None,
    "billed_ms": None,
    "aws_calls": None,
    "api_requests": ("POST", "GET"),
    "log_bytes_per_invocation": FUNCTION_LEVELS,
    "execution_log_bytes": EXECUTION_LEVELS,
}
_PATH_KEYS: Final = tuple(OrderPath.__dataclass_fields__)

# The current numbers (see the module docstring for what is measured and what is assumed).
CURRENT_PROFILE: Final[dict[str, Any]] = {
    "happy": {
        "invocations": {
            "Api": 1,
            "Intake": 1,
            "ReserveInventory": 1,
            "TakePayment": 1,
            "ConfirmOrder": 1,
        },
        "billed_ms": {
            "Api": 90,
            "Intake": 70,
            "ReserveInventory": 45,
            "TakePayment": 260,
            "ConfirmOrder": 35,
        },
        "aws_calls": {
            "dynamodb:PutItem": 5,
            "dynamodb:UpdateItem": 5,
            "sqs:SendMessage": 1,
            "states:StartExecution": 1,
        },
        "state_transitions": 4,
        "execution_ms": 520,
        "api_requests": {"POST": 1, "GET": 2},
        "get_billed_ms": 25,
        "sqs_esm_requests_per_message": 2,
        "log_bytes_per_invocation": {"DEBUG": 6000, "INFO": 1800, "WARNING": 900, "ERROR": 900},
        "execution_log_bytes": {"ALL": 28000, "ERROR": 0, "FATAL": 0, "OFF": 0},
        "access_log_bytes_per_request": 650,
        "traces": 4,
        "aws_call_bytes": 1500,
        "provider_bytes": 5000,
        "egress_bytes": 4500,
    },
    "compensated": {
        "invocations": {
            "Api": 1,
            "Intake": 1,
            "ReserveInventory": 1,
            "TakePayment": 1,
            "RefundPayment": 1,
            "ReleaseInventory": 1,
            "MarkOrderFailed": 1,
        },
        "billed_ms": {
            "Api": 90,
            "Intake": 70,
            "ReserveInventory": 45,
            "TakePayment": 240,
            "RefundPayment": 250,
            "ReleaseInventory": 40,
            "MarkOrderFailed": 35,
        },
        "aws_calls": {
            "dynamodb:PutItem": 7,
            "dynamodb:UpdateItem": 6,
            "dynamodb:DeleteItem": 1,
            "sqs:SendMessage": 1,
            "states:StartExecution": 1,
        },
        "state_transitions": 6,
        "execution_ms": 750,
        "api_requests": {"POST": 1, "GET": 2},
        "get_billed_ms": 25,
        "sqs_esm_requests_per_message": 2,
        "log_bytes_per_invocation": {
            "DEBUG": 7000,
            "INFO": 2200,
            "WARNING": 1100,
            "ERROR": 1000,
        },
        "execution_log_bytes": {"ALL": 42000, "ERROR": 1500, "FATAL": 0, "OFF": 0},
        "access_log_bytes_per_request": 650,
        "traces": 4,
        "aws_call_bytes": 1500,
        "provider_bytes": 10000,
        "egress_bytes": 6000,
    },
}


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{where}: expected a number, got {value!r}")
    if value < 0:
        raise ProfileError(f"{where}: must not be negative, got {value!r}")
    return float(value)


def _numbers(where: str, value: Any, required: tuple[str, ...] | None) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected an object of numbers, got {value!r}")
    if required is not None:
        missing = sorted(set(required) - set(value))
        unknown = sorted(set(value) - set(required))
        if missing:
            raise ProfileError(f"{where}: missing keys {missing}")
        if unknown:
            raise ProfileError(f"{where}: unknown keys {unknown} (expected {list(required)})")
    return {str(k): _number(f"{where}.{k}", v) for k, v in value.items()}


def _exactly(where: str, raw: Mapping[str, Any], keys: Sequence[str]) -> None:
    missing = sorted(set(keys) - set(raw))
    unknown = sorted(set(raw) - set(keys))
    if missing:
        raise ProfileError(f"{where}: missing keys {missing}")
    if unknown:
        raise ProfileError(f"{where}: unknown keys {unknown}")


def parse_path(where: str, raw: Any) -> OrderPath:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: expected an object, got {raw!r}")
    _exactly(where, raw, _PATH_KEYS)
    values: dict[str, Any] = {}
    for key in _PATH_KEYS:
        if key in _MAPPING_KEYS:
            values[key] = _numbers(f"{where}.{key}", raw[key], _MAPPING_KEYS[key])
        else:
            values[key] = _number(f"{where}.{key}", raw[key])
    no_duration = sorted(set(values["invocations"]) - set(values["billed_ms"]))
    if no_duration:
        raise ProfileError(f"{where}.billed_ms: missing keys {no_duration} (invoked functions)")
    return OrderPath(**values)


def parse_profile(raw: Any, *, where: str = PROFILE_KEY) -> OrderProfile:
    """A strict reading of the ``order_profile`` object: ``{"happy": ..., "compensated": ...}``."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: expected an object with keys {list(PATHS)}, got {raw!r}")
    _exactly(where, raw, PATHS)
    return OrderProfile(
        happy=parse_path(f"{where}.happy", raw["happy"]),
        compensated=parse_path(f"{where}.compensated", raw["compensated"]),
    )


def load_profile(path: Path | None = None) -> OrderProfile:
    """``path`` (or docs/performance.json when it exists) key ``order_profile``; else
    ``CURRENT_PROFILE``. A given ``path`` that does not exist is an error."""
    if path is None:
        if not PROFILE_FILE.exists():
            return parse_profile(CURRENT_PROFILE, where="CURRENT_PROFILE")
        path = PROFILE_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or PROFILE_KEY not in document:
        raise ProfileError(f"{path}: no {PROFILE_KEY!r} key at the top level")
    return parse_profile(document[PROFILE_KEY], where=f"{path.name}:{PROFILE_KEY}")


# --------------------------------------------------------------------------- template reading


def load_template(stage: str) -> dict[str, Any]:
    """The synthesized template of ``stage`` (``make synth`` writes both)."""
    if stage not in TEMPLATES:
        raise ValueError(f"unknown stage {stage!r}; known: {list(TEMPLATES)}")
    path = TEMPLATES[stage]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `make synth` (offline, ~1 minute)")
    template: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return template


def _resources(template: Mapping[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == cfn_type
    }


def _props(resource: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = resource.get("Properties", {})
    return props


def _ref(value: Any) -> str | None:
    """The logical id a Ref / GetAtt (or a Join containing one) points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
        if "Fn::Join" in value:
            for part in value["Fn::Join"][1]:
                found = _ref(part)
                if found is not None:
                    return found
    return None


def _flat(value: Any) -> str:
    """A string, or a Join of strings with every intrinsic replaced by ``REF``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_flat(part) for part in parts)
    return "REF"


@dataclass(frozen=True)
class Function:
    name: str  # logical name (Api, Intake, ...)
    memory_mb: int
    architecture: str
    log_level: str  # one of FUNCTION_LEVELS
    log_level_source: str
    retention_days: int | None
    tracing: bool
    provisioned_concurrency: int = 0


def _camel(module: str) -> str:
    return "".join(part.capitalize() for part in module.split("_"))


def _retention(template: Mapping[str, Any], log_group: Any) -> int | None:
    logical_id = _ref(log_group)
    if logical_id is None:
        return None
    group = template.get("Resources", {}).get(logical_id, {})
    days = _props(group).get("RetentionInDays")
    return int(days) if days is not None else None


def _level(raw: str) -> str:
    level = raw.upper()
    level = _LEVEL_ALIASES.get(level, level)
    if level not in FUNCTION_LEVELS:
        raise TemplateError(f"unknown log level {raw!r}")
    return level


def functions(template: Mapping[str, Any]) -> dict[str, Function]:
    """The service's functions (handler ``orders_saga.handlers.<module>.handler``) by logical
    name. CDK's own custom-resource handlers run at deploy time only and are left out."""
    provisioned: dict[str, int] = {}
    for alias in _resources(template, "AWS::Lambda::Alias").values():
        props = _props(alias)
        count = props.get("ProvisionedConcurrencyConfig", {}).get(
            "ProvisionedConcurrentExecutions", 0
        )
        target = _ref(props.get("FunctionName"))
        if target is not None and count:
            provisioned[target] = int(count)
    found: dict[str, Function] = {}
    for logical_id, resource in _resources(template, "AWS::Lambda::Function").items():
        props = _props(resource)
        handler = str(props.get("Handler", ""))
        if not handler.startswith("orders_saga.handlers."):
            continue
        name = _camel(handler.split(".")[2])
        env = props.get("Environment", {}).get("Variables", {})
        logging = props.get("LoggingConfig", {})
        for source, raw in (
            ("POWERTOOLS_LOG_LEVEL", env.get("POWERTOOLS_LOG_LEVEL")),
            ("LOG_LEVEL", env.get("LOG_LEVEL")),
            ("LoggingConfig", logging.get("ApplicationLogLevel")),
            ("default", "INFO"),
        ):
            if isinstance(raw, str):
                level, level_source = _level(raw), source
                break
        found[name] = Function(
            name=name,
            memory_mb=int(props.get("MemorySize", 128)),
            architecture=str((props.get("Architectures") or ["x86_64"])[0]),
            log_level=level,
            log_level_source=level_source,
            retention_days=_retention(template, logging.get("LogGroup")),
            tracing=props.get("TracingConfig", {}).get("Mode") == "Active",
            provisioned_concurrency=provisioned.get(logical_id, 0),
        )
    return found


@dataclass(frozen=True)
class StateMachine:
    type: str
    log_level: str
    include_execution_data: bool
    retention_days: int | None
    tracing: bool
    timeout_s: int | None
    definition: Mapping[str, Any]


def state_machine(template: Mapping[str, Any]) -> StateMachine:
    machines = list(_resources(template, "AWS::StepFunctions::StateMachine").values())
    if len(machines) != 1:
        raise TemplateError(f"expected one state machine, found {len(machines)}")
    props = _props(machines[0])
    logging = props.get("LoggingConfiguration", {})
    destinations = logging.get("Destinations", [])
    retention = None
    if destinations:
        retention = _retention(
            template, destinations[0].get("CloudWatchLogsLogGroup", {}).get("LogGroupArn")
        )
    raw_definition = props.get("DefinitionString")
    definition: dict[str, Any] = json.loads(_flat(raw_definition)) if raw_definition else {}
    timeout = definition.get("TimeoutSeconds")
    return StateMachine(
        type=str(props.get("StateMachineType", "STANDARD")),
        log_level=str(logging.get("Level", "OFF")),
        include_execution_data=bool(logging.get("IncludeExecutionData", False)),
        retention_days=retention,
        tracing=bool(props.get("TracingConfiguration", {}).get("Enabled", False)),
        timeout_s=int(timeout) if timeout is not None else None,
        definition=definition,
    )


def happy_path_states(template: Mapping[str, Any]) -> list[str]:
    """States entered from StartAt following ``Next`` to the end (no Catch, no retry)."""
    definition = state_machine(template).definition
    states: Mapping[str, Any] = definition.get("States", {})
    path: list[str] = []
    current = definition.get("StartAt")
    while isinstance(current, str) and current not in path:
        path.append(current)
        current = states.get(current, {}).get("Next")
    return path


@dataclass(frozen=True)
class ApiStage:
    tracing: bool
    access_log_retention_days: int | None
    access_logs: bool
    detailed_metrics: bool
    methods: int


def api_stage(template: Mapping[str, Any]) -> ApiStage | None:
    stages = list(_resources(template, "AWS::ApiGateway::Stage").values())
    if not stages:
        return None
    props = _props(stages[0])
    access = props.get("AccessLogSetting")
    methods = [
        m
        for m in _resources(template, "AWS::ApiGateway::Method").values()
        if _props(m).get("HttpMethod") != "OPTIONS"
    ]
    return ApiStage(
        tracing=bool(props.get("TracingEnabled", False)),
        access_logs=access is not None,
        access_log_retention_days=(
            _retention(template, access.get("DestinationArn")) if access else None
        ),
        detailed_metrics=any(s.get("MetricsEnabled") for s in props.get("MethodSettings", [])),
        methods=len(methods),
    )


def _endpoint_service(props: Mapping[str, Any]) -> str:
    return _flat(props.get("ServiceName", "")).rsplit(".", 1)[-1]


def endpoints(template: Mapping[str, Any]) -> tuple[dict[str, int], set[str]]:
    """(interface endpoint service -> subnets (one ENI per AZ), gateway endpoint services)."""
    interface: dict[str, int] = {}
    gateway: set[str] = set()
    for resource in _resources(template, "AWS::EC2::VPCEndpoint").values():
        props = _props(resource)
        service = _endpoint_service(props)
        if props.get("VpcEndpointType", "Gateway") == "Interface":
            interface[service] = len(props.get("SubnetIds", [])) or 1
        else:
            gateway.add(service)
    return interface, gateway


def xray_sampling(template: Mapping[str, Any]) -> tuple[float, float, str]:
    """(fixed rate, reservoir per second, where it comes from): the highest-priority sampling
    rule in the template, else X-Ray's default rule."""
    rules = [
        _props(r).get("SamplingRule", {})
        for r in _resources(template, "AWS::XRay::SamplingRule").values()
    ]
    rules = [r for r in rules if r]
    if not rules:
        return P.XRAY_DEFAULT_FIXED_RATE, P.XRAY_DEFAULT_RESERVOIR_PER_S, "default rule"
    rule = min(rules, key=lambda r: int(r.get("Priority", 10000)))
    return (
        float(rule.get("FixedRate", 0.0)),
        float(rule.get("ReservoirSize", 0)),
        f"rule {rule.get('RuleName', '?')}",
    )


def tracing_enabled(template: Mapping[str, Any]) -> bool:
    stage = api_stage(template)
    return (
        any(f.tracing for f in functions(template).values())
        or state_machine(template).tracing
        or bool(stage and stage.tracing)
    )


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class Line:
    """One priced line. ``quantity`` in ``unit``; ``usd`` what it costs.

    ``workflow``: a Step Functions workflow line (the only lines Standard and Express differ
    on). ``idle``: a fixed line charged with no traffic at all (False: only while traffic
    flows, like custom metrics billed per hour with data). ``unverified``: uses a price that
    benchmarks/prices.py marks unverified.
    """

    name: str
    quantity: float
    unit: str
    usd: float
    note: str = ""
    workflow: bool = False
    idle: bool = True
    unverified: bool = False

    @property
    def unit_price(self) -> float:
        return self.usd / self.quantity if self.quantity else 0.0


def _unverified(*names: str) -> bool:
    return any(name in P.UNVERIFIED for name in names)


def total(lines: Iterable[Line]) -> float:
    return sum(line.usd for line in lines)


def _tiered(quantity: float, tiers: Sequence[tuple[float, float]], per_tier: float) -> float:
    """Cost of ``quantity`` (in GB-seconds) under tiers given as (size in GB-hours, price)."""
    usd, left = 0.0, quantity
    for size_hours, price in tiers:
        size = size_hours * per_tier
        used = min(left, size)
        usd += used * price
        left -= used
        if left <= 0:
            break
    return usd


# Per AWS call: (line, price per call, price names) - None: billed through the workflow.
_CALLS: Final[Mapping[str, tuple[str, float, str] | None]] = {
    "dynamodb:PutItem": ("DynamoDB write request units", P.DYNAMODB_WRITE_UNIT, "WRUs"),
    "dynamodb:UpdateItem": ("DynamoDB write request units", P.DYNAMODB_WRITE_UNIT, "WRUs"),
    "dynamodb:DeleteItem": ("DynamoDB write request units", P.DYNAMODB_WRITE_UNIT, "WRUs"),
    "dynamodb:GetItem": ("DynamoDB read request units", P.DYNAMODB_READ_UNIT, "RRUs"),
    "sqs:SendMessage": ("SQS requests", P.SQS_REQUEST, "requests"),
    "secretsmanager:GetSecretValue": ("Secrets Manager API calls", P.SECRETS_API_CALL, "calls"),
    "states:StartExecution": None,
}


def _check_calls(path: OrderPath, where: str) -> None:
    unknown = sorted(set(path.aws_calls) - set(_CALLS))
    if unknown:
        raise ProfileError(
            f"{where}.aws_calls: no price for {unknown}; add them to benchmarks/cost.py _CALLS"
        )


def _workflow_lines(
    template: Mapping[str, Any], path: OrderPath, orders: float, workflow: Workflow
) -> list[Line]:
    executions = path.aws_calls.get("states:StartExecution", 0.0) * orders
    if workflow == "STANDARD":
        transitions = path.state_transitions * orders
        return [
            Line(
                "Step Functions Standard: state transitions",
                transitions,
                "transitions",
                transitions * P.SFN_STANDARD_TRANSITION,
                f"{path.state_transitions:g} states entered",
                workflow=True,
            )
        ]
    step = P.SFN_EXPRESS_DURATION_STEP_MS
    billed_s = math.ceil(path.execution_ms / step) * step / 1000
    gb = P.SFN_EXPRESS_MEMORY_CHUNK_MB / 1024
    gb_seconds = executions * billed_s * gb
    return [
        Line(
            "Step Functions Express: requests",
            executions,
            "requests",
            executions * P.SFN_EXPRESS_REQUEST,
            "one per StartExecution",
            workflow=True,
        ),
        Line(
            "Step Functions Express: duration",
            gb_seconds,
            "GB-s",
            _tiered(gb_seconds, P.SFN_EXPRESS_GB_SECOND_TIERS, 3600),
            f"{billed_s * 1000:.0f} ms x {P.SFN_EXPRESS_MEMORY_CHUNK_MB} MB",
            workflow=True,
        ),
    ]


@dataclass(frozen=True)
class _Volume:
    """``orders`` orders on one path, and what the template makes of them."""

    template: Mapping[str, Any]
    path: OrderPath
    orders: float
    functions: Mapping[str, Function]
    function_order: Sequence[str]

    @property
    def requests(self) -> float:
        return (self.path.api_requests["POST"] + self.path.api_requests["GET"]) * self.orders

    @property
    def get_invocations(self) -> float:
        """Every status GET invokes Api (both methods integrate with it: infra/api.py)."""
        return self.path.api_requests["GET"] * self.orders if "Api" in self.functions else 0.0

    def invocations(self, name: str) -> float:
        """The POST's and the saga's invocations of ``name``, plus Api's status GETs."""
        count = self.path.invocations.get(name, 0.0) * self.orders
        return count + (self.get_invocations if name == "Api" else 0.0)

    @property
    def executions(self) -> float:
        return self.path.aws_calls.get("states:StartExecution", 0.0) * self.orders


def _api_lines(volume: _Volume) -> list[Line]:
    lines: list[Line] = []
    requests = volume.requests
    if api_stage(volume.template) is not None:
        lines.append(
            Line(
                "API Gateway REST requests",
                requests,
                "requests",
                requests * P.APIGW_REST_REQUEST,
                f"POST + {volume.path.api_requests['GET']:g} status GETs (assumption)",
            )
        )
    if _resources(volume.template, "AWS::WAFv2::WebACLAssociation"):
        lines.append(Line("WAF requests inspected", requests, "requests", requests * P.WAF_REQUEST))
    return lines


def _lambda_lines(volume: _Volume) -> list[Line]:
    path = volume.path
    everything = sum(volume.invocations(name) for name in volume.function_order)
    lines = [
        Line(
            "Lambda requests",
            everything,
            "invocations",
            everything * P.LAMBDA_REQUEST,
            "incl. one Api invocation per status GET",
        )
    ]
    for name in volume.function_order:
        fn = volume.functions[name]
        ms = path.billed_ms.get(name, 0.0) * path.invocations.get(name, 0.0) * volume.orders
        if name == "Api":
            ms += path.get_billed_ms * volume.get_invocations
        gb_seconds = ms / 1000 * fn.memory_mb / 1024
        on_pc = fn.provisioned_concurrency > 0
        table = P.LAMBDA_PC_DURATION_GB_SECOND if on_pc else P.LAMBDA_GB_SECOND
        price_name = "LAMBDA_PC_DURATION_GB_SECOND" if on_pc else "LAMBDA_GB_SECOND"
        lines.append(
            Line(
                f"Lambda duration: {name}",
                gb_seconds,
                "GB-s",
                gb_seconds * table[fn.architecture],
                f"{fn.memory_mb} MB {fn.architecture}"
                + (", on provisioned concurrency" if on_pc else ""),
                unverified=_unverified(f"{price_name}[{fn.architecture}]"),
            )
        )
    return lines


_CALL_NOTES: Final = {
    "DynamoDB write request units": "items up to 1 KB",
    "DynamoDB read request units": "strongly consistent, items up to 4 KB",
    "SQS requests": "SendMessage + the event source mapping's receive/delete (assumption)",
    "Secrets Manager API calls": "",
}


def _call_lines(volume: _Volume) -> list[Line]:
    """The AWS calls the functions make, priced per call (StartExecution is the workflow's)."""
    per_line: dict[str, tuple[float, float, str]] = {}

    def add(line_name: str, count: float, price: float, unit: str) -> None:
        quantity, usd, first_unit = per_line.get(line_name, (0.0, 0.0, unit))
        per_line[line_name] = (quantity + count, usd + count * price, first_unit)

    for call, count in volume.path.aws_calls.items():
        priced = _CALLS[call]
        if priced is not None:
            line_name, price, unit = priced
            add(line_name, count * volume.orders, price, unit)
    if _resources(volume.template, "AWS::Lambda::EventSourceMapping"):
        sends = volume.path.aws_calls.get("sqs:SendMessage", 0.0) * volume.orders
        esm = volume.path.sqs_esm_requests_per_message * sends
        add("SQS requests", esm, P.SQS_REQUEST, "requests")
    return [
        Line(name, per_line[name][0], per_line[name][2], per_line[name][1], note)
        for name, note in _CALL_NOTES.items()
        if name in per_line
    ]


def _log_lines(volume: _Volume) -> list[Line]:
    """CloudWatch Logs: ingestion per source, storage over each group's retention."""
    path = volume.path
    machine = state_machine(volume.template)
    stage = api_stage(volume.template)
    storage_gb_months = 0.0
    function_bytes = 0.0
    levels: set[str] = set()
    for name in volume.function_order:
        fn = volume.functions[name]
        size = path.log_bytes_per_invocation[fn.log_level] * volume.invocations(name)
        function_bytes += size
        levels.add(f"{fn.log_level} ({fn.log_level_source})")
        storage_gb_months += size / P.GB * _retention_months(fn.retention_days)
    if machine.log_level not in EXECUTION_LEVELS:
        raise TemplateError(f"unknown state machine log level {machine.log_level!r}")
    execution_bytes = path.execution_log_bytes[machine.log_level] * volume.executions
    storage_gb_months += execution_bytes / P.GB * _retention_months(machine.retention_days)
    lines = [
        Line(
            "CloudWatch Logs ingestion: functions",
            function_bytes / P.GB,
            "GB",
            function_bytes / P.GB * P.LOGS_INGEST_GB,
            ", ".join(sorted(levels)),
        ),
        Line(
            "CloudWatch Logs ingestion: executions",
            execution_bytes / P.GB,
            "GB",
            execution_bytes / P.GB * P.LOGS_INGEST_GB,
            f"level {machine.log_level}"
            + (", with execution data" if machine.include_execution_data else ""),
        ),
    ]
    if stage is not None and stage.access_logs:
        access_gb = path.access_log_bytes_per_request * volume.requests / P.GB
        storage_gb_months += access_gb * _retention_months(stage.access_log_retention_days)
        lines.append(
            Line(
                "CloudWatch Logs ingestion: API access logs",
                access_gb,
                "GB",
                access_gb * P.LOGS_INGEST_GB,
            )
        )
    lines.append(
        Line(
            "CloudWatch Logs storage",
            storage_gb_months,
            "GB-months",
            storage_gb_months * P.LOGS_STORAGE_GB_MONTH,
            "each GB kept for its group's retention (uncompressed: an upper bound)",
        )
    )
    return lines


def _xray_lines(volume: _Volume) -> list[Line]:
    """The sampled share of the traces an order starts (the reservoir is in the budget)."""
    if not tracing_enabled(volume.template):
        return []
    rate, _, source = xray_sampling(volume.template)
    traces = volume.path.traces * volume.orders * rate
    return [
        Line(
            "X-Ray traces recorded",
            traces,
            "traces",
            traces * P.XRAY_TRACE_RECORDED,
            f"{rate:.0%} of {volume.path.traces:g} per order ({source})",
        )
    ]


def _network_lines(volume: _Volume) -> list[Line]:
    """AWS calls through an interface endpoint, a (free) gateway endpoint or the NAT; the
    payment provider through the NAT; what leaves AWS."""
    path, orders = volume.path, volume.orders
    interface, gateway = endpoints(volume.template)
    has_nat = bool(_resources(volume.template, "AWS::EC2::NatGateway"))
    nat_bytes = path.provider_bytes * orders if has_nat else 0.0
    endpoint_bytes = 0.0
    for call, count in path.aws_calls.items():
        service = call.split(":", 1)[0]
        size = count * orders * path.aws_call_bytes
        if service in interface:
            endpoint_bytes += size
        elif service not in gateway:
            nat_bytes += size
    lines = [
        Line(
            "NAT gateway data processed",
            nat_bytes / P.GB,
            "GB",
            nat_bytes / P.GB * P.NAT_GATEWAY_GB,
            "payment provider + AWS calls without an endpoint",
        )
    ]
    if interface:
        lines.append(
            Line(
                "Interface endpoint data processed",
                endpoint_bytes / P.GB,
                "GB",
                endpoint_bytes / P.GB * P.INTERFACE_ENDPOINT_GB,
                "+".join(sorted(interface)),
            )
        )
    egress_gb = path.egress_bytes * orders / P.GB
    lines.append(
        Line(
            "Data transfer out to the internet",
            egress_gb,
            "GB",
            egress_gb * P.DATA_TRANSFER_OUT_GB,
            "API responses + payment provider requests",
        )
    )
    return lines


def _path_lines(
    template: Mapping[str, Any],
    path: OrderPath,
    orders: float,
    workflow: Workflow,
    function_order: Sequence[str],
) -> list[Line]:
    """Every per-order line for ``orders`` orders on one path, in a fixed order (zero lines
    included, so the two paths' lists line up)."""
    fns = functions(template)
    missing = sorted(set(function_order) - set(fns))
    if missing:
        raise ProfileError(f"the profile invokes {missing}, which the template does not have")
    _check_calls(path, "profile")
    volume = _Volume(template, path, orders, fns, function_order)
    return [
        *_workflow_lines(template, path, orders, workflow),
        *_api_lines(volume),
        *_lambda_lines(volume),
        *_call_lines(volume),
        *_log_lines(volume),
        *_xray_lines(volume),
        *_network_lines(volume),
    ]


def _retention_months(days: int | None) -> float:
    # A group without retention keeps logs forever; count one year of them.
    return (days if days is not None else 365) / (P.HOURS_PER_MONTH / 24)


def _merge(weighted: Sequence[tuple[float, list[Line]]]) -> list[Line]:
    """Add lists of lines that have the same names in the same order (weights already in)."""
    first = weighted[0][1]
    merged: list[Line] = []
    for index, line in enumerate(first):
        others = [lines[index] for _, lines in weighted[1:]]
        if any(other.name != line.name for other in others):
            raise AssertionError("line lists do not line up")  # a bug in _path_lines
        notes = [line.note, *(o.note for o in others)]
        note = line.note
        if any(n != line.note for n in notes):
            note = "; ".join(f"{name}: {n}" for name, n in zip(PATHS, notes, strict=True) if n)
        merged.append(
            replace(
                line,
                quantity=line.quantity + sum(o.quantity for o in others),
                usd=line.usd + sum(o.usd for o in others),
                note=note,
            )
        )
    return [line for line in merged if line.quantity or line.workflow]


def cost_per_million(
    template: Mapping[str, Any],
    profile: OrderProfile,
    workflow: Workflow = "STANDARD",
    *,
    compensated_share: float = COMPENSATED_SHARE,
) -> list[Line]:
    """What 1M orders cost, line by line: ``1 - compensated_share`` of them happy."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {WORKFLOWS}, not {workflow!r}")
    if not 0.0 <= compensated_share <= 1.0:
        raise ValueError("compensated_share must be in [0, 1]")
    order: list[str] = []
    for name in PATHS:
        for fn in profile.path(name).invocations:
            if fn not in order:
                order.append(fn)
    if "Api" in functions(template) and "Api" not in order:
        order.insert(0, "Api")  # status GETs invoke it even if the profile does not
    weighted = [
        (share, _path_lines(template, profile.path(name), MILLION * share, workflow, order))
        for name, share in (("happy", 1 - compensated_share), ("compensated", compensated_share))
    ]
    return _merge(weighted)


# --------------------------------------------------------------------------- fixed monthly


def _alarm_metrics(props: Mapping[str, Any]) -> tuple[int, bool]:
    """(metrics the alarm is billed for, high resolution)."""
    if "Metrics" in props:
        stats = [m for m in props["Metrics"] if "MetricStat" in m]
        period = min((int(m["MetricStat"].get("Period", 60)) for m in stats), default=60)
        return len(stats), period < 60
    return 1, int(props.get("Period", 60)) < 60


def _custom_metrics(template: Mapping[str, Any]) -> tuple[int, int]:
    """(metrics published with traffic, metrics published only on errors).

    Custom metrics are billed per hour they receive data. Metric filters on every invocation's
    ``platform.report`` line publish with all traffic; other filters only when their pattern
    matches (errors). EMF metrics: the ones the alarms read (a lower bound: Powertools may
    emit more)."""
    routine: set[str] = set()
    rare: set[str] = set()
    for resource in _resources(template, "AWS::Logs::MetricFilter").values():
        props = _props(resource)
        pattern = str(props.get("FilterPattern", ""))
        for metric in props.get("MetricTransformations", []):
            key = json.dumps(
                [metric.get("MetricNamespace"), metric.get("MetricName")], sort_keys=True
            )
            every_time = "platform.report" in pattern or "DefaultValue" in metric
            (routine if every_time else rare).add(key)
    filter_keys = routine | rare
    for resource in _resources(template, "AWS::CloudWatch::Alarm").values():
        props = _props(resource)
        metrics = (
            [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
            if "Metrics" in props
            else [props]
        )
        for metric in metrics:
            namespace = metric.get("Namespace")
            if not isinstance(namespace, str) or namespace.startswith("AWS/"):
                continue
            key = json.dumps([namespace, metric.get("MetricName")], sort_keys=True)
            if key in filter_keys:
                continue
            routine.add(key + json.dumps(metric.get("Dimensions"), sort_keys=True))
    return len(routine), len(rare - routine)


def _network_fixed(template: Mapping[str, Any]) -> list[Line]:
    hours = P.HOURS_PER_MONTH
    lines: list[Line] = []
    nats = len(_resources(template, "AWS::EC2::NatGateway"))
    if nats:
        lines.append(
            Line("NAT gateways", nats, "gateways", nats * P.NAT_GATEWAY_HOUR * hours, "730 h")
        )
    ips = len(_resources(template, "AWS::EC2::EIP"))
    if ips:
        lines.append(
            Line("Public IPv4 addresses", ips, "addresses", ips * P.PUBLIC_IPV4_HOUR * hours)
        )
    interface, gateway = endpoints(template)
    if interface:
        az_endpoints = sum(interface.values())
        lines.append(
            Line(
                "Interface endpoints",
                az_endpoints,
                "endpoint-AZs",
                az_endpoints * P.INTERFACE_ENDPOINT_AZ_HOUR * hours,
                " + ".join(f"{s} x {n} AZ" for s, n in sorted(interface.items()))
                + (f"; gateway ({', '.join(sorted(gateway))}) free" if gateway else ""),
            )
        )
    return lines


def _database_fixed(template: Mapping[str, Any]) -> list[Line]:
    hours = P.HOURS_PER_MONTH
    lines: list[Line] = []
    vcpus = 0
    for props in (_props(r) for r in _resources(template, "AWS::RDS::DBInstance").values()):
        klass = str(props.get("DBInstanceClass"))
        storage_type = str(props.get("StorageType", "gp2"))
        if klass not in P.RDS_INSTANCE_HOUR:
            raise TemplateError(f"no price for {klass}: add it to benchmarks/prices.py")
        if storage_type not in P.RDS_STORAGE_GB_MONTH:
            raise TemplateError(f"no price for RDS storage {storage_type!r}")
        copies = 2 if props.get("MultiAZ") else 1
        vcpus += P.RDS_INSTANCE_VCPUS[klass]
        gb = float(props.get("AllocatedStorage", 0))
        lines += [
            Line(
                f"RDS {klass} {'Multi-AZ' if copies == 2 else 'single-AZ'}",
                copies,
                "instances",
                copies * P.RDS_INSTANCE_HOUR[klass] * hours,
                str(props.get("Engine", "")),
                unverified=_unverified(f"RDS_INSTANCE_HOUR[{klass}]"),
            ),
            Line(
                f"RDS storage {storage_type}",
                gb * copies,
                "GB-months",
                gb * copies * P.RDS_STORAGE_GB_MONTH[storage_type],
                f"{gb:g} GB x {copies}",
                unverified=_unverified(f"RDS_STORAGE_GB_MONTH[{storage_type}]"),
            ),
        ]
    proxies = len(_resources(template, "AWS::RDS::DBProxy"))
    if proxies:
        billed = max(P.RDS_PROXY_MIN_VCPUS, vcpus) * proxies
        lines.append(
            Line(
                "RDS Proxy",
                billed,
                "vCPUs",
                billed * P.RDS_PROXY_VCPU_HOUR * hours,
                f"the instance's vCPUs, at least {P.RDS_PROXY_MIN_VCPUS}",
                unverified=_unverified("RDS_PROXY_VCPU_HOUR"),
            )
        )
    return lines


def _compute_fixed(template: Mapping[str, Any]) -> list[Line]:
    lines: list[Line] = []
    for fn in functions(template).values():
        if fn.provisioned_concurrency:
            gb_seconds = fn.provisioned_concurrency * fn.memory_mb / 1024 * P.SECONDS_PER_MONTH
            lines.append(
                Line(
                    f"Provisioned concurrency: {fn.name}",
                    gb_seconds,
                    "GB-s",
                    gb_seconds * P.LAMBDA_PC_GB_SECOND[fn.architecture],
                    f"{fn.provisioned_concurrency} x {fn.memory_mb} MB {fn.architecture}",
                    unverified=_unverified(f"LAMBDA_PC_GB_SECOND[{fn.architecture}]"),
                )
            )
    acls = _resources(template, "AWS::WAFv2::WebACL")
    if acls:
        rules = sum(len(_props(a).get("Rules", [])) for a in acls.values())
        lines.append(
            Line(
                "WAF web ACL + rules",
                len(acls),
                "web ACLs",
                len(acls) * P.WAF_WEB_ACL_MONTH + rules * P.WAF_RULE_MONTH,
                f"{rules} rules",
            )
        )
    mappings = _resources(template, "AWS::Lambda::EventSourceMapping").values()
    queues = set(_resources(template, "AWS::SQS::Queue"))
    sqs_mappings = [m for m in mappings if _ref(_props(m).get("EventSourceArn")) in queues]
    if sqs_mappings:
        polls = (
            len(sqs_mappings)
            * P.SQS_ESM_IDLE_POLLERS
            * P.SECONDS_PER_MONTH
            / P.SQS_LONG_POLL_WAIT_S
        )
        lines.append(
            Line(
                "SQS empty receives (event source mapping)",
                polls,
                "requests",
                polls * P.SQS_REQUEST,
                f"{P.SQS_ESM_IDLE_POLLERS} pollers x 20 s long polls (assumption)",
                unverified=_unverified("SQS_ESM_IDLE_POLLERS"),
            )
        )
    return lines


def _monitoring_fixed(template: Mapping[str, Any]) -> list[Line]:
    lines: list[Line] = []
    alarms = _resources(template, "AWS::CloudWatch::Alarm")
    standard, high_res = 0, 0
    for resource in alarms.values():
        count, high = _alarm_metrics(_props(resource))
        standard += 0 if high else count
        high_res += count if high else 0
    if alarms:
        lines.append(
            Line(
                "CloudWatch alarms",
                standard + high_res,
                "alarm metrics",
                standard * P.ALARM_METRIC_MONTH + high_res * P.ALARM_HIGH_RES_METRIC_MONTH,
                f"{len(alarms)} alarms; a metric-math alarm pays for each metric",
            )
        )
    dashboards = len(_resources(template, "AWS::CloudWatch::Dashboard"))
    if dashboards:
        lines.append(
            Line("CloudWatch dashboards", dashboards, "dashboards", dashboards * P.DASHBOARD_MONTH)
        )
    routine, rare = _custom_metrics(template)
    stage = api_stage(template)
    detailed = (
        stage.methods * APIGW_DETAILED_METRICS_PER_METHOD
        if stage is not None and stage.detailed_metrics
        else 0
    )
    if routine + detailed:
        lines.append(
            Line(
                "CloudWatch custom metrics",
                routine + detailed,
                "metrics",
                (routine + detailed) * P.CUSTOM_METRIC_MONTH,
                f"{routine} from filters/EMF + {detailed} API detailed; billed only in hours "
                f"with data; {rare} error-only filter metrics not counted",
                idle=False,
                unverified=bool(detailed),
            )
        )
    return lines


def _keys_fixed(template: Mapping[str, Any]) -> list[Line]:
    lines: list[Line] = []
    keys = len(_resources(template, "AWS::KMS::Key"))
    if keys:
        lines.append(
            Line(
                "KMS keys",
                keys,
                "keys",
                keys * P.KMS_KEY_MONTH,
                "+$1/month per rotated key version from year 2",
            )
        )
    secrets = len(_resources(template, "AWS::SecretsManager::Secret"))
    if secrets:
        lines.append(Line("Secrets Manager secrets", secrets, "secrets", secrets * P.SECRET_MONTH))
    return lines


def fixed_monthly(template: Mapping[str, Any]) -> list[Line]:
    """What the stage costs per month whatever the traffic, from the template."""
    return [
        *_network_fixed(template),
        *_database_fixed(template),
        *_compute_fixed(template),
        *_monitoring_fixed(template),
        *_keys_fixed(template),
    ]


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class BudgetDerivation:
    stage: str
    orders_per_month: int
    workflow: Workflow
    fixed_usd: float
    per_million_usd: float
    variable_usd: float
    xray_reservoir_usd: float
    headroom: float
    budget_usd: int
    fixed: list[Line] = field(default_factory=list)

    @property
    def expected_usd(self) -> float:
        return self.fixed_usd + self.variable_usd + self.xray_reservoir_usd

    @property
    def raw_usd(self) -> float:
        return self.expected_usd * self.headroom


def round_up(usd: float) -> int:
    """Up to a round number: a multiple of 5 x 10^(digits - 2) (173 -> 200, 1,068 -> 1,500)."""
    if usd <= 0:
        return 0
    digits = math.floor(math.log10(usd)) + 1
    step = 5 * 10 ** max(digits - 2, 0)
    return int(math.ceil(usd / step - 1e-9) * step)


def _xray_reservoir(template: Mapping[str, Any], profile: OrderProfile, orders: int) -> float:
    """Traces the sampling reservoir records on top of the fixed rate: at low volume it traces
    nearly every request (1 a second is 2.6M a month), which the per-1M line cannot know."""
    if not tracing_enabled(template):
        return 0.0
    rate, reservoir, _ = xray_sampling(template)
    traces = orders * (
        (1 - COMPENSATED_SHARE) * profile.happy.traces
        + COMPENSATED_SHARE * profile.compensated.traces
    )
    return min(traces, reservoir * P.SECONDS_PER_MONTH) * (1 - rate) * P.XRAY_TRACE_RECORDED


def derive_budget(
    stage: str,
    *,
    template: Mapping[str, Any] | None = None,
    profile: OrderProfile | None = None,
    orders_per_month: int | None = None,
    headroom: float = BUDGET_HEADROOM,
) -> BudgetDerivation:
    """Fixed monthly cost + expected orders x cost per order (the template's workflow type)
    + the X-Ray reservoir, times ``headroom``, rounded up (``round_up``)."""
    template = load_template(stage) if template is None else template
    profile = load_profile() if profile is None else profile
    if orders_per_month is None:
        # infra.config imports aws_cdk (only when asked); jsii's Node banner is noise here, as
        # in the Makefile and tests/conftest.py.
        os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
        from infra.config import stage_config

        orders_per_month = stage_config(stage).expected_monthly_orders
    machine_type = state_machine(template).type
    workflow: Workflow = "EXPRESS" if machine_type == "EXPRESS" else "STANDARD"
    fixed = fixed_monthly(template)
    per_million = total(cost_per_million(template, profile, workflow))
    fixed_usd = total(fixed)
    variable = per_million * orders_per_month / MILLION
    reservoir = _xray_reservoir(template, profile, orders_per_month)
    budget = round_up((fixed_usd + variable + reservoir) * headroom)
    return BudgetDerivation(
        stage=stage,
        orders_per_month=orders_per_month,
        workflow=workflow,
        fixed_usd=fixed_usd,
        per_million_usd=per_million,
        variable_usd=variable,
        xray_reservoir_usd=reservoir,
        headroom=headroom,
        budget_usd=budget,
        fixed=fixed,
    )


def monthly_budget(
    stage: str,
    *,
    template: Mapping[str, Any] | None = None,
    profile: OrderProfile | None = None,
    orders_per_month: int | None = None,
    headroom: float = BUDGET_HEADROOM,
) -> int:
    """The ``monthly_budget_usd`` infra/config.py must hold for ``stage`` (``derive_budget``)."""
    return derive_budget(
        stage,
        template=template,
        profile=profile,
        orders_per_month=orders_per_month,
        headroom=headroom,
    ).budget_usd


# --------------------------------------------------------------------------- Express analysis


@dataclass(frozen=True)
class ExpressComparison:
    standard_workflow_usd: float  # per 1M orders
    express_workflow_usd: float
    standard_total_usd: float
    express_total_usd: float
    saga_timeout_s: int | None
    express_max_s: int
    # What Express would add per 1M orders to stand where Standard stands today.
    history_logs_usd: float  # ALL-level execution logs: Express keeps no history otherwise
    dedup_writes_usd: float  # one conditional PutItem per order instead of the execution name

    @property
    def net_saving_per_million(self) -> float:
        return (
            self.standard_total_usd
            - self.express_total_usd
            - self.history_logs_usd
            - self.dedup_writes_usd
        )


def compare_express(
    template: Mapping[str, Any],
    profile: OrderProfile,
    *,
    compensated_share: float = COMPENSATED_SHARE,
) -> ExpressComparison:
    standard = cost_per_million(template, profile, "STANDARD", compensated_share=compensated_share)
    express = cost_per_million(template, profile, "EXPRESS", compensated_share=compensated_share)
    machine = state_machine(template)
    shares = {"happy": 1 - compensated_share, "compensated": compensated_share}

    def per_million(value: Callable[[OrderPath], float]) -> float:
        """Sum over both paths of share x starts x ``value``, for 1M orders."""
        return MILLION * sum(
            share
            * profile.path(name).aws_calls.get("states:StartExecution", 0.0)
            * value(profile.path(name))
            for name, share in shares.items()
        )

    executions = per_million(lambda _: 1.0)
    all_bytes = per_million(lambda path: path.execution_log_bytes["ALL"])
    now_bytes = per_million(lambda path: path.execution_log_bytes[machine.log_level])
    extra_gb = max(0.0, all_bytes - now_bytes) / P.GB
    history = extra_gb * (
        P.LOGS_INGEST_GB + P.LOGS_STORAGE_GB_MONTH * _retention_months(machine.retention_days)
    )
    return ExpressComparison(
        standard_workflow_usd=total(line for line in standard if line.workflow),
        express_workflow_usd=total(line for line in express if line.workflow),
        standard_total_usd=total(standard),
        express_total_usd=total(express),
        saga_timeout_s=machine.timeout_s,
        express_max_s=P.SFN_EXPRESS_MAX_DURATION_S,
        history_logs_usd=history,
        dedup_writes_usd=executions * P.DYNAMODB_WRITE_UNIT,
    )


# --------------------------------------------------------------------------- rendering


def _usd(value: float) -> str:
    if value and abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def _quantity(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1e6:,.2f}M"
    if value >= 10_000:
        return f"{value / 1e3:,.1f}k"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"


_SINGULAR: Final = {"addresses": "address", "GB-months": "GB-month", "vCPUs": "vCPU"}


def _amount(line: Line) -> str:
    unit = line.unit
    if line.quantity == 1:
        unit = _SINGULAR.get(unit, unit.removesuffix("s"))
    return f"{_quantity(line.quantity)} {unit}"


def _mark(line: Line) -> str:
    return " (*)" if line.unverified else ""


@dataclass(frozen=True)
class Report:
    stage: str
    standard: list[Line]
    express: list[Line]
    fixed: list[Line]
    budget: BudgetDerivation
    comparison: ExpressComparison
    happy_path: list[str]
    profile: OrderProfile
    compensated_share: float
    template_workflow: str


def build_report(
    stage: str,
    *,
    template: Mapping[str, Any] | None = None,
    profile: OrderProfile | None = None,
    compensated_share: float = COMPENSATED_SHARE,
) -> Report:
    template = load_template(stage) if template is None else template
    profile = load_profile() if profile is None else profile
    return Report(
        stage=stage,
        standard=cost_per_million(
            template, profile, "STANDARD", compensated_share=compensated_share
        ),
        express=cost_per_million(template, profile, "EXPRESS", compensated_share=compensated_share),
        fixed=fixed_monthly(template),
        budget=derive_budget(stage, template=template, profile=profile),
        comparison=compare_express(template, profile, compensated_share=compensated_share),
        happy_path=happy_path_states(template),
        profile=profile,
        compensated_share=compensated_share,
        template_workflow=state_machine(template).type,
    )


def _side_by_side(report: Report) -> list[tuple[str, str, str, str, str]]:
    """(line, quantity, Standard, Express, note) rows: shared lines once, workflow lines in
    their own column."""
    express = {line.name: line for line in report.express}
    rows: list[tuple[str, str, str, str, str]] = []
    for line in report.standard:
        if line.workflow:
            rows.append((line.name + _mark(line), _amount(line), _usd(line.usd), "-", line.note))
            for other in report.express:
                if other.workflow:
                    rows.append(
                        (
                            other.name + _mark(other),
                            _amount(other),
                            "-",
                            _usd(other.usd),
                            other.note,
                        )
                    )
            continue
        same = express[line.name]
        rows.append(
            (
                line.name + _mark(line),
                _amount(line),
                _usd(line.usd),
                _usd(same.usd),
                line.note,
            )
        )
    rows.append(
        ("Total per 1M orders", "", _usd(total(report.standard)), _usd(total(report.express)), "")
    )
    return rows


def _summary(report: Report) -> list[str]:
    c = report.comparison
    b = report.budget
    happy = report.profile.happy.state_transitions
    path = " -> ".join(report.happy_path)
    return [
        f"Template: {report.template_workflow} state machine; happy path {path} "
        f"({len(report.happy_path)} states; the profile says {happy:g})",
        f"Workflow lines per 1M orders: Standard {_usd(c.standard_workflow_usd)} "
        f"({c.standard_workflow_usd / c.standard_total_usd:.0%} of {_usd(c.standard_total_usd)}),"
        f" Express {_usd(c.express_workflow_usd)} (of {_usd(c.express_total_usd)})",
        f"Express would also need: the saga's worst case ({c.saga_timeout_s} s, the "
        f"template's TimeoutSeconds) cut below its {c.express_max_s} s maximum; execution "
        f"history from ALL-level logs (+{_usd(c.history_logs_usd)} per 1M); a deduplication "
        f"write per order instead of the execution name (+{_usd(c.dedup_writes_usd)} per 1M); "
        f"a replacement for redrive. Net saving {_usd(c.net_saving_per_million)} per 1M orders.",
        f"Budget: ({_usd(b.fixed_usd)} fixed + {b.orders_per_month:,} orders x "
        f"{_usd(b.per_million_usd)}/1M = {_usd(b.variable_usd)} + X-Ray reservoir "
        f"{_usd(b.xray_reservoir_usd)}) x {b.headroom:g} headroom = {_usd(b.raw_usd)} -> "
        f"${b.budget_usd:,} (monthly_budget_usd in infra/config.py)",
        f"Prices: {P.REGION} on demand, checked {P.PRICES_CHECKED}, no free tiers; "
        "(*) = a price unverified here (benchmarks/prices.py).",
    ]


def render_text(report: Report) -> str:
    out: list[str] = []
    happy_share = 1 - report.compensated_share
    out.append(
        f"{report.stage}: cost per 1M orders ({happy_share:.0%} happy, "
        f"{report.compensated_share:.0%} compensated)"
    )
    rows = _side_by_side(report)
    header = ("Line", "Quantity", "Standard", "Express", "Note")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        out.append(
            f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}  {row[4]}".rstrip()
        )
    out.append("")
    out.append(
        f"{this_service().name} {report.stage}: fixed cost per month ({P.HOURS_PER_MONTH} h)"
    )
    fixed_rows = [
        (
            line.name + _mark(line) + ("" if line.idle else " (with traffic)"),
            _amount(line),
            _usd(line.usd),
            line.note,
        )
        for line in report.fixed
    ]
    idle = total(line for line in report.fixed if line.idle)
    fixed_rows.append(
        ("Total fixed", "", _usd(total(report.fixed)), f"idle (no traffic): {_usd(idle)}")
    )
    fixed_widths = [max(len(r[i]) for r in fixed_rows) for i in range(3)]
    for name, amount, usd, note in fixed_rows:
        out.append(
            f"  {name:<{fixed_widths[0]}}  {amount:>{fixed_widths[1]}}  "
            f"{usd:>{fixed_widths[2]}}  {note}".rstrip()
        )
    out.append("")
    out.extend(_summary(report))
    return "\n".join(out)


def render_markdown(
    stage: str,
    *,
    template: Mapping[str, Any] | None = None,
    profile: OrderProfile | None = None,
    compensated_share: float = COMPENSATED_SHARE,
) -> str:
    """Markdown tables (per 1M orders side by side, fixed monthly) and the budget derivation,
    for docs/performance.md."""
    report = build_report(
        stage, template=template, profile=profile, compensated_share=compensated_share
    )
    out = [
        f"#### {stage}: cost per 1M orders ({1 - compensated_share:.0%} happy, "
        f"{compensated_share:.0%} compensated)",
        "",
        "| Line | Quantity | Standard | Express | Note |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in _side_by_side(report):
        cells = list(row)
        if cells[0].startswith("Total"):
            cells = [f"**{c}**" if c else c for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        f"#### {stage}: fixed cost per month ({P.HOURS_PER_MONTH} h)",
        "",
        "| Line | Quantity | Per month | Note |",
        "| --- | ---: | ---: | --- |",
    ]
    for line in report.fixed:
        name = line.name + _mark(line) + ("" if line.idle else " (with traffic)")
        out.append(f"| {name} | {_amount(line)} | {_usd(line.usd)} | {line.note} |")
    idle = total(line for line in report.fixed if line.idle)
    out.append(
        f"| **Total fixed** | | **{_usd(total(report.fixed))}** | idle (no traffic): {_usd(idle)} |"
    )
    out += ["", *(f"- {line}" for line in _summary(report)), ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stage", choices=STAGES, default="prod")
    parser.add_argument("--profile", type=Path, help="JSON file with an order_profile key")
    parser.add_argument("--template", type=Path, help="a synthesized template (default: cdk.out*)")
    parser.add_argument("--compensated-share", type=float, default=COMPENSATED_SHARE)
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        template = (
            json.loads(args.template.read_text(encoding="utf-8"))
            if args.template
            else load_template(args.stage)
        )
        if args.markdown:
            print(
                render_markdown(
                    args.stage,
                    template=template,
                    profile=profile,
                    compensated_share=args.compensated_share,
                )
            )
        else:
            report = build_report(
                args.stage,
                template=template,
                profile=profile,
                compensated_share=args.compensated_share,
            )
            print(render_text(report))
    except (ProfileError, TemplateError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
