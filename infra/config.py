"""Stage settings: the ONE place for every tunable number of the deployed system.

Everything that differs between stages is a field here, so the constructs never ask
`if stage == ...` (ADR 0001). The module validates itself at import: a stage whose reserved
concurrency could exhaust the database proxy (F06) or whose retry budget is unbounded (F03)
cannot be synthesized.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from infra.service import this_service

# F16: runtime and architecture are set here and nowhere else. scripts/bootstrap.sh,
# infra/bundling.py (pip --python-version) and the tests read LAMBDA_PYTHON_VERSION.
LAMBDA_PYTHON_VERSION = "3.13"
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_13
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
# F16: FUNCTION_UPDATE means runtime patches arrive only with our own deploys, so they go
# through the tests and (in prod) the canary instead of landing silently under live traffic.
LAMBDA_RUNTIME_MANAGEMENT = lambda_.RuntimeManagementMode.FUNCTION_UPDATE
# Platform tags pip resolves wheels for (F16). psycopg-binary 3.3 ships only manylinux_2_28
# aarch64 wheels, pydantic-core only manylinux2014 ones; the python3.13 runtime (Amazon
# Linux 2023, glibc 2.34) runs both.
LAMBDA_PIP_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64")

# Logical function names of docs/architecture.md.
FUNCTION_NAMES = (
    "Api",
    "Intake",
    "ReserveInventory",
    "TakePayment",
    "ConfirmOrder",
    "RefundPayment",
    "ReleaseInventory",
    "MarkOrderFailed",
    "Migrate",
    "PreTrafficHook",
)
# F12: CodeDeploy's BeforeAllowTraffic hook (infra/deployments.py). It talks only to the
# Lambda and CodeDeploy APIs, so it is outside the VPC and outside the connection budget.
PRE_TRAFFIC_HOOK = "PreTrafficHook"
# Powertools Metrics namespace (EMF), from service.yml: the functions get it as
# POWERTOOLS_METRICS_NAMESPACE, the alarms and the dashboard read from the same value.
METRICS_NAMESPACE = this_service().metrics_namespace
# The functions that open a PostgreSQL connection (docs/architecture.md, "talks to"): every
# service function holds one connection (ADR 0004).
DB_FUNCTIONS = frozenset(FUNCTION_NAMES) - {PRE_TRAFFIC_HOOK}
# The saga's Lambda tasks: three forward steps and, in the worst case, three compensations.
SAGA_STEPS = (
    "ReserveInventory",
    "TakePayment",
    "ConfirmOrder",
    "RefundPayment",
    "ReleaseInventory",
    "MarkOrderFailed",
)

# SQS: 14 days is the longest retention SQS offers; a DLQ must outlive any weekend (F17).
DLQ_RETENTION = Duration.days(14)
# AWS: visibility timeout >= 6 x the consumer's function timeout (+ the batching window), so a
# message is not redelivered while a slow, throttled or retried batch still holds it (F07).
VISIBILITY_TIMEOUT_FACTOR = 6
SFN_MAX_RETRY_ATTEMPTS = 4  # F03: above this a saga step is hammering, not retrying.


class ConfigError(ValueError):
    """A stage configuration violates an invariant; synthesis must stop."""


class ConnectionBudgetExceededError(ConfigError):
    """F06: reserved concurrency could open more connections than the proxy may hold."""


@dataclass(frozen=True)
class FunctionSettings:
    memory_mb: int
    timeout_s: int
    # F05: every function has reserved concurrency; for DB users it is also the F06 bound.
    reserved_concurrency: int

    def __post_init__(self) -> None:
        if not 128 <= self.memory_mb <= 10240:
            raise ConfigError(f"memory {self.memory_mb} MB outside Lambda limits")
        if not 1 <= self.timeout_s <= 900:
            raise ConfigError(f"timeout {self.timeout_s} s outside Lambda limits")
        if self.reserved_concurrency < 1:
            raise ConfigError("reserved concurrency must be >= 1 (0 disables the function)")

    @property
    def timeout(self) -> Duration:
        return Duration.seconds(self.timeout_s)


@dataclass(frozen=True)
class RetryBudget:
    """Step Functions Retry for a saga task (F03): bounded, exponential, full jitter."""

    interval_s: int = 1
    max_attempts: int = 3  # retries after the first attempt (ASL MaxAttempts)
    backoff_rate: float = 2.0
    max_delay_s: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.max_attempts <= SFN_MAX_RETRY_ATTEMPTS:
            raise ConfigError(f"max_attempts must be 0..{SFN_MAX_RETRY_ATTEMPTS}")
        if self.interval_s < 1 or self.backoff_rate < 1.0 or self.max_delay_s < self.interval_s:
            raise ConfigError(
                "retry budget must back off: interval >= 1, rate >= 1, cap >= interval"
            )

    @property
    def total_attempts(self) -> int:
        return 1 + self.max_attempts

    def max_delays_s(self) -> tuple[int, ...]:
        """Upper bound of each wait; JitterStrategy FULL picks uniformly in [0, bound]."""
        return tuple(
            min(self.max_delay_s, math.ceil(self.interval_s * self.backoff_rate**n))
            for n in range(self.max_attempts)
        )


@dataclass(frozen=True)
class QueueSettings:
    batch_size: int = 10
    max_batching_window_s: int = 1
    # F05: bounds the Intake fan-out; >= 2 is the SQS event source minimum.
    max_concurrency: int = 2
    # F02: a poison message is tried this many times, then parked in the DLQ.
    max_receive_count: int = 3
    retention: Duration = field(default_factory=lambda: Duration.days(4))

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10:
            raise ConfigError("SQS batch size must be 1..10 (FIFO-compatible, no window math)")
        if not 2 <= self.max_concurrency <= 1000:
            raise ConfigError("SQS ESM maximum concurrency must be 2..1000")
        if not 3 <= self.max_receive_count <= 5:
            raise ConfigError("maxReceiveCount must be 3..5: enough for transient errors (F02)")


@dataclass(frozen=True)
class ApiSettings:
    # F05: stage-wide method throttling, and the usage plan's quota.
    throttle_rate_limit: int
    throttle_burst_limit: int
    quota_limit: int
    quota_period: apigw.Period
    # F04: warm environments behind the Api alias; read by the deployment issue.
    provisioned_concurrency: int


@dataclass(frozen=True)
class DatabaseSettings:
    # F16: a pinned minor version; auto minor upgrades are off so the deployed engine is the
    # one in this file (upgrade = change here, test, deploy).
    engine_full_version: str
    engine_major_version: str
    instance_type: str  # without the "db." prefix, as ec2.InstanceType expects
    # max_connections PostgreSQL derives for the class: LEAST(DBInstanceClassMemory/9531392,
    # 5000), rounded down conservatively. Check with `SHOW max_connections` after a class change.
    instance_max_connections: int
    proxy_max_connections_percent: int
    proxy_max_idle_connections_percent: int
    proxy_borrow_timeout_s: int
    multi_az: bool
    deletion_protection: bool
    backup_retention_days: int
    allocated_storage_gb: int
    max_allocated_storage_gb: int
    removal_policy: RemovalPolicy
    rotation_days: int = 30  # F14
    database_name: str = "orders"
    # The role functions log in as through the proxy with an IAM token (created by Migrate).
    app_user: str = "orders_app"
    port: int = 5432
    connect_timeout_s: int = 3  # F07
    statement_timeout_ms: int = 5000  # F07
    # F06: one connection per execution environment, reused across invocations.
    connections_per_env: int = 1


@dataclass(frozen=True)
class NetworkSettings:
    max_azs: int
    nat_gateways: int
    # Interface endpoints keep SQS, Secrets Manager and Step Functions traffic off the NAT and
    # working through a NAT outage; they cost per AZ-hour, so only where availability pays.
    interface_endpoints: bool
    cidr: str = "10.40.0.0/16"


@dataclass(frozen=True)
class PaymentSettings:
    api_url: str
    connect_timeout_s: float = 2.0  # F07
    read_timeout_s: float = 5.0  # F07
    breaker_fail_max: int = 5  # F19
    # F19: how long an open breaker fails fast before one probe call. Shorter than the payment
    # step's expected retry backoff (StageConfig checks it), or the breaker outlives the
    # saga's retries and fails every order it rejects although the provider is back.
    breaker_reset_s: int = 2


@dataclass(frozen=True)
class AwsSdkSettings:
    # F03/F07: botocore bounds; Step Functions owns the retries of saga steps, so the SDK
    # keeps only its default 3 attempts for throttling inside one invocation.
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    max_attempts: int = 3


@dataclass(frozen=True)
class AlarmThresholds:
    """What "too much" means for the alarms of docs/operations-contract.md (issue 4).

    Counts are per 5-minute period unless the name says otherwise. Limits the alarms compare
    against (reserved concurrency, timeouts, memory, the proxy's connection budget) are not
    repeated here: the alarms read them from the rest of the StageConfig.
    """

    # F05/F06/F07/F21: warn at this fraction of a configured hard limit, while there is still
    # headroom to act before the limit itself throttles, times out or kills an invocation.
    near_limit_fraction: float = 0.8
    # F01: a client or SQS redelivering an order now and then is normal and absorbed; this
    # many suppressed duplicates in 5 minutes means something upstream retries in a loop.
    duplicates_suppressed: int = 25
    # F02: must exceed maxReceiveCount x visibility timeout (3 x 181 s = 543 s), the age a
    # poison message legitimately reaches before it is parked in the DLQ (checked below).
    intake_oldest_message_age_s: int = 900
    # F03: saga step invocations per started execution, as a fraction of the worst case
    # (6 tasks x 4 attempts = 24). 0.25 -> 6: above every business path without retries
    # (happy path 3, declined payment 5), so only widespread retrying crosses it.
    retry_amplification_fraction: float = 0.25
    # F04: Api environments started in 5 minutes; above it a spike or deploy is starting
    # environments faster than provisioned concurrency absorbs them.
    api_cold_starts: int = 20
    # F06: normal borrow latency is microseconds; hundreds of milliseconds mean clients
    # queue for a pooled connection and will hit the proxy's borrow timeout next.
    proxy_borrow_latency_p99_ms: int = 200
    # F06 (issue 10): the functions never pin a proxy connection (no prepared statements, no
    # session SET, no temp tables or advisory locks: ADR 0008), so any sustained pinning is a
    # regression that quietly turns the proxy's multiplexing off.
    proxy_pinned_connections: int = 0
    # F08 / F11: rates are only judged when the period has this many samples, so one failed
    # order out of three at night does not page anyone.
    min_samples_for_rate: int = 10
    # F08: failed executions per 100 started (business failures included, hence a rate).
    saga_failure_rate_percent: float = 20.0
    # F09: refunds are rare (ConfirmOrder failures, charges whose response was lost).
    payment_refunds: int = 5
    # F10: step Errors include business outcomes (declines, out of stock), so not zero.
    saga_step_errors: int = 10
    # F11: 4XX responses per 100 requests.
    api_4xx_rate_percent: float = 10.0
    # F13: the API's p99 latency; the Api function's own timeout is 10 s.
    api_p99_latency_ms: int = 3000
    # F22: total invocations may exceed the most the API admits at full throttle (every
    # order on its happy path) by this factor before it counts as "far above normal".
    invocation_rate_headroom: float = 1.5

    def __post_init__(self) -> None:
        if not 0.0 < self.near_limit_fraction < 1.0:
            raise ConfigError("near_limit_fraction must be in (0, 1)")
        if not 0.0 < self.retry_amplification_fraction <= 1.0:
            raise ConfigError("retry_amplification_fraction must be in (0, 1]")
        if self.invocation_rate_headroom < 1.0:
            raise ConfigError("invocation_rate_headroom below 1 would alarm on normal traffic")


@dataclass(frozen=True)
class DeploymentSettings:
    """F12: how CodeDeploy moves each `live` alias to a new version, and when it rolls back.

    The rollback alarms watch the alias' new version only (CloudWatch `ExecutedVersion`), one
    datapoint per minute, so a canary's 5-minute bake sees several datapoints.
    """

    # CodeDeployDefault.Lambda*: a canary shifts a slice of traffic, waits, then the rest;
    # ALL_AT_ONCE switches at once (the pre-traffic hook still gates it).
    traffic_shifting: codedeploy.ILambdaDeploymentConfig
    # Saga steps raise business outcomes (OutOfStock, PaymentDeclined) as function errors, so
    # `Errors` > 0 is normal traffic: roll back on a rate, and only past a minimum count so
    # one declined card among a canary's few invocations does not undo a deploy.
    rollback_error_rate_percent: float = 5.0
    rollback_min_errors: int = 3
    # p99 `Duration` bound as a share of the function's own timeout (F07), so every function
    # gets a bound without a second table of numbers to keep in step with the timeouts.
    rollback_latency_p99_percent_of_timeout: int = 50
    # Minutes of an alarm's window, and how many of them must breach.
    errors_evaluation_periods: int = 1
    latency_evaluation_periods: int = 3
    latency_datapoints_to_alarm: int = 2
    # F07: the hook's read timeout for one health-check invoke of the new version: its cold
    # start (Lambda caps init at 10 s) plus the init-only health branch.
    health_check_timeout_s: int = 15

    def __post_init__(self) -> None:
        if not 0 < self.rollback_error_rate_percent <= 100:
            raise ConfigError("rollback error rate must be a percentage in (0, 100]")
        if self.rollback_min_errors < 1:
            raise ConfigError("rollback_min_errors must be >= 1")
        if not 1 <= self.rollback_latency_p99_percent_of_timeout < 100:
            raise ConfigError("the p99 latency bound must be a share of the timeout, 1..99 %")
        if not 1 <= self.latency_datapoints_to_alarm <= self.latency_evaluation_periods:
            raise ConfigError("latency datapoints to alarm must be 1..evaluation periods")
        if self.errors_evaluation_periods < 1 or self.health_check_timeout_s < 1:
            raise ConfigError("evaluation periods and the health-check timeout must be >= 1")


@dataclass(frozen=True)
class StageConfig:
    name: str
    functions: Mapping[str, FunctionSettings]
    queue: QueueSettings
    api: ApiSettings
    db: DatabaseSettings
    network: NetworkSettings
    payment: PaymentSettings
    retry: RetryBudget
    # F07: Step Functions TimeoutSeconds per saga task. Longer than the step functions'
    # own Lambda timeout so the Lambda error (Sandbox.Timedout) is the one normally seen.
    task_timeout_s: int
    deployment: DeploymentSettings  # F12: canary (prod) or all-at-once, rollback alarms
    log_retention: logs.RetentionDays
    log_level: str
    # F05/F22: the AWS Budgets limit. Derived, not guessed: (fixed monthly cost of the
    # synthesized template + expected_monthly_orders x cost per order) x headroom, rounded up
    # (benchmarks/cost.py; tests/benchmarks/test_cost.py fails when the two drift). Recompute
    # with `python -m benchmarks.cost --stage <stage>` after changing what deploys or the volume.
    monthly_budget_usd: int
    expected_monthly_orders: int  # the order volume the budget is derived for
    tags: Mapping[str, str]
    idempotency_ttl_s: int = 24 * 3600  # F01: client retries within a day are deduplicated
    aws_sdk: AwsSdkSettings = field(default_factory=AwsSdkSettings)
    alarms: AlarmThresholds = field(default_factory=AlarmThresholds)
    # Who the alarm topic emails (issue 4); empty where nobody is paged.
    alarm_emails: tuple[str, ...] = ()
    # Stateful resources (table, queues, logs) in this stage: DESTROY only where data is
    # disposable.
    removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    service: str = field(default_factory=lambda: this_service().name)

    def __post_init__(self) -> None:
        missing = set(FUNCTION_NAMES) - set(self.functions)
        if missing:
            raise ConfigError(f"{self.name}: no FunctionSettings for {sorted(missing)}")
        intake = self.functions["Intake"]
        if self.queue.max_concurrency > intake.reserved_concurrency:
            # F05: above the reserved concurrency the ESM gets throttled and burns receives.
            raise ConfigError(f"{self.name}: ESM max concurrency exceeds Intake's reservation")
        if self.api.provisioned_concurrency > self.functions["Api"].reserved_concurrency:
            raise ConfigError(f"{self.name}: provisioned concurrency exceeds Api's reservation")
        for step in SAGA_STEPS:
            if self.functions[step].timeout_s >= self.task_timeout_s:
                raise ConfigError(f"{self.name}: task timeout must exceed {step}'s timeout")
        # F07/F12: the hook must outlive every attempt of its health-check invoke, or it dies
        # without reporting and CodeDeploy waits up to an hour for a status.
        hook_budget_s = self.aws_sdk.max_attempts * self.deployment.health_check_timeout_s
        if self.functions[PRE_TRAFFIC_HOOK].timeout_s <= hook_budget_s:
            raise ConfigError(
                f"{self.name}: {PRE_TRAFFIC_HOOK} timeout must exceed {hook_budget_s} s "
                "(SDK attempts x health-check timeout)"
            )
        check_connection_budget(self)
        if self.payment.breaker_reset_s >= payment_expected_backoff_s(self):
            raise ConfigError(
                f"{self.name}: payment breaker_reset_s must be below the payment step's expected "
                f"retry backoff, {payment_expected_backoff_s(self)} s (F19)"
            )
        if self.alarms.intake_oldest_message_age_s <= poison_message_max_age_s(self):
            # F02: a poison message reaches this age before its DLQ move; the age alarm
            # would fire on every one instead of on a stalled Intake.
            raise ConfigError(
                f"{self.name}: intake age alarm must exceed {poison_message_max_age_s(self)} s"
            )

    def function(self, logical_name: str) -> FunctionSettings:
        return self.functions[logical_name]

    @property
    def alarm_prefix(self) -> str:
        """What every alarm name of the stage starts with (issue 10, finding 5): two stages in
        one account must never share an alarm name, or one stage's alarm could roll back the
        other's deploy (CodeDeploy names its rollback alarms by name)."""
        return f"{self.service}-{self.name}-"

    def alarm_name(self, contract_name: str) -> str:
        """The CloudWatch AlarmName of a contract alarm (docs/operations-contract.md names
        alarms by their contract name, ``<catalogue id>-<what>``, the same in every stage)."""
        return f"{self.alarm_prefix}{contract_name}"

    def contract_alarm_name(self, alarm_name: str) -> str:
        if not alarm_name.startswith(self.alarm_prefix):
            raise ConfigError(f"{alarm_name!r} is not an alarm of stage {self.name}")
        return alarm_name.removeprefix(self.alarm_prefix)


@dataclass(frozen=True)
class ConnectionBudget:
    demand: int  # connections the DB-using functions could open at once
    capacity: int  # connections the proxy may open to the instance

    @property
    def holds(self) -> bool:
        return self.demand <= self.capacity


def connection_budget(config: StageConfig) -> ConnectionBudget:
    """F06: worst-case connections vs the proxy's share of the instance's max_connections.

    demand = sum over DB functions of reserved_concurrency x connections_per_env, plus the
    Api alias' provisioned environments (counted again on purpose: a conservative bound).
    capacity = floor(instance max_connections x proxy max_connections_percent / 100).
    """
    db = config.db
    demand = sum(
        config.functions[name].reserved_concurrency * db.connections_per_env
        for name in sorted(DB_FUNCTIONS)
    )
    demand += config.api.provisioned_concurrency * db.connections_per_env
    capacity = db.instance_max_connections * db.proxy_max_connections_percent // 100
    return ConnectionBudget(demand=demand, capacity=capacity)


def check_connection_budget(config: StageConfig) -> ConnectionBudget:
    budget = connection_budget(config)
    if not budget.holds:
        raise ConnectionBudgetExceededError(
            f"{config.name}: DB functions may open {budget.demand} connections but the proxy "
            f"may hold only {budget.capacity} (F06): lower reserved concurrency or grow the DB"
        )
    return budget


def saga_execution_timeout_s(config: StageConfig) -> int:
    """F07: worst-case saga duration derived from the retry budget, never guessed.

    The longest path runs all 6 Lambda tasks (3 forward steps fail at the last, then 3
    compensations), each exhausting its retries. With the default budget and a 15 s task
    timeout:
      per task  = attempts x task timeout + sum of max delays
                = (1 + 3) x 15 s + (1 + 2 + 4) s = 60 s + 7 s = 67 s
      execution = 6 x 67 s = 402 s
    (The needs-attention SQS send is a sub-second service call and not counted.)
    """
    retry = config.retry
    per_task = retry.total_attempts * config.task_timeout_s + sum(retry.max_delays_s())
    return len(SAGA_STEPS) * per_task


def payment_expected_backoff_s(config: StageConfig) -> float:
    """F19: how long the saga keeps retrying a payment step, on average.

    Full jitter draws each wait uniformly in [0, bound], so the expected total wait is half
    the sum of the bounds: (1 + 2 + 4) s / 2 = 3.5 s with the default budget. An open circuit
    breaker that fails fast for longer than this rejects most orders' every retry, so it
    would turn a provider blip into failed orders for its whole open period.
    """
    return sum(config.retry.max_delays_s()) / 2


def saga_step_invocations_worst_case(config: StageConfig) -> int:
    """F03: step invocations one execution can cause: every task, every attempt (24)."""
    return len(SAGA_STEPS) * config.retry.total_attempts


def poison_message_max_age_s(config: StageConfig) -> int:
    """F02: how old a poison message gets before SQS moves it to the DLQ.

    maxReceiveCount receives, each hidden for the visibility timeout (infra/queues.py).
    """
    visibility_s = (
        VISIBILITY_TIMEOUT_FACTOR * config.functions["Intake"].timeout_s
        + config.queue.max_batching_window_s
    )
    return config.queue.max_receive_count * visibility_s


def saga_execution_timeout(config: StageConfig) -> Duration:
    return Duration.seconds(saga_execution_timeout_s(config))


def _functions(**settings: tuple[int, int, int]) -> Mapping[str, FunctionSettings]:
    """(memory MB, timeout s, reserved concurrency) per logical name."""
    return MappingProxyType({name: FunctionSettings(*values) for name, values in settings.items()})


def _tags(stage: str) -> Mapping[str, str]:
    # F18: every resource carries an owner and a cost centre (service.yml).
    answers = this_service()
    return MappingProxyType(
        {
            "service": answers.name,
            "owner": answers.owner,
            "stage": stage,
            "cost-centre": answers.cost_centre,
        }
    )


# Memory (F04/F21): 512 MB for the handlers that import pydantic + psycopg + Powertools (init
# CPU scales with memory); 256 MB for the small ones. Timeouts (F07): the Api answers within
# API Gateway's 29 s; saga steps are single queries or one provider call (5 s read timeout).
STAGES: Mapping[str, StageConfig] = MappingProxyType(
    {
        "dev": StageConfig(
            name="dev",
            functions=_functions(
                Api=(512, 10, 10),
                Intake=(256, 30, 4),
                ReserveInventory=(512, 10, 4),
                TakePayment=(512, 10, 4),
                ConfirmOrder=(512, 10, 4),
                RefundPayment=(512, 10, 2),
                ReleaseInventory=(512, 10, 2),
                MarkOrderFailed=(512, 10, 2),
                Migrate=(512, 120, 1),
                # F12: one deployment at a time per function; 2 lets two groups deploy at once.
                PreTrafficHook=(256, 60, 2),
            ),
            queue=QueueSettings(max_batching_window_s=1, max_concurrency=2),
            api=ApiSettings(
                throttle_rate_limit=10,
                throttle_burst_limit=20,
                quota_limit=10_000,
                quota_period=apigw.Period.DAY,
                provisioned_concurrency=0,
            ),
            db=DatabaseSettings(
                engine_full_version="17.6",
                engine_major_version="17",
                instance_type="t4g.small",
                instance_max_connections=180,
                proxy_max_connections_percent=50,
                proxy_max_idle_connections_percent=10,
                proxy_borrow_timeout_s=5,
                multi_az=False,
                deletion_protection=False,
                backup_retention_days=1,
                allocated_storage_gb=20,
                max_allocated_storage_gb=50,
                removal_policy=RemovalPolicy.DESTROY,
            ),
            network=NetworkSettings(max_azs=2, nat_gateways=1, interface_endpoints=False),
            payment=PaymentSettings(api_url=this_service().stage("dev").payment_api_url),
            retry=RetryBudget(),
            task_timeout_s=15,
            # F12: dev takes a new version at once; the pre-traffic hook still gates it.
            deployment=DeploymentSettings(
                traffic_shifting=codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE
            ),
            log_retention=logs.RetentionDays.TWO_WEEKS,
            log_level="DEBUG",
            # `python -m benchmarks.cost --stage dev`: 10k test orders on top of the idle cost
            # (NAT, RDS, proxy, WAF, alarms), so the alarm means a runaway, not standing still.
            monthly_budget_usd=this_service().stage("dev").monthly_budget_usd,
            expected_monthly_orders=10_000,
            alarms=AlarmThresholds(),
            alarm_emails=this_service().stage("dev").alarm_emails,
            tags=_tags("dev"),
            removal_policy=RemovalPolicy.DESTROY,
        ),
        "prod": StageConfig(
            name="prod",
            functions=_functions(
                Api=(1024, 10, 100),
                Intake=(256, 30, 20),
                ReserveInventory=(512, 10, 50),
                TakePayment=(512, 10, 50),
                ConfirmOrder=(512, 10, 50),
                RefundPayment=(512, 10, 20),
                ReleaseInventory=(512, 10, 20),
                MarkOrderFailed=(512, 10, 20),
                Migrate=(512, 120, 1),
                # F12: CloudFormation may start the 8 functions' deployments together.
                PreTrafficHook=(256, 60, 8),
            ),
            queue=QueueSettings(max_batching_window_s=2, max_concurrency=10),
            api=ApiSettings(
                throttle_rate_limit=100,
                throttle_burst_limit=200,
                quota_limit=1_000_000,
                quota_period=apigw.Period.MONTH,
                provisioned_concurrency=2,
            ),
            db=DatabaseSettings(
                engine_full_version="17.6",
                engine_major_version="17",
                instance_type="r7g.large",
                instance_max_connections=1600,
                proxy_max_connections_percent=75,
                proxy_max_idle_connections_percent=25,
                proxy_borrow_timeout_s=5,
                multi_az=True,
                deletion_protection=True,
                backup_retention_days=14,
                allocated_storage_gb=100,
                max_allocated_storage_gb=500,
                removal_policy=RemovalPolicy.SNAPSHOT,
            ),
            network=NetworkSettings(max_azs=2, nat_gateways=2, interface_endpoints=True),
            payment=PaymentSettings(api_url=this_service().stage("prod").payment_api_url),
            retry=RetryBudget(),
            task_timeout_s=15,
            # F12: 10 % of traffic for 5 minutes under the rollback alarms, then the rest.
            deployment=DeploymentSettings(
                traffic_shifting=codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES
            ),
            log_retention=logs.RetentionDays.THREE_MONTHS,
            log_level="INFO",
            # `python -m benchmarks.cost --stage prod`: the stage's fixed cost plus 1M orders.
            monthly_budget_usd=this_service().stage("prod").monthly_budget_usd,
            expected_monthly_orders=1_000_000,
            # Counts scale with prod's traffic (10x dev's throttle); rates and fractions do not.
            alarms=AlarmThresholds(
                duplicates_suppressed=100,
                api_cold_starts=50,
                payment_refunds=20,
                saga_step_errors=50,
            ),
            alarm_emails=this_service().stage("prod").alarm_emails,
            tags=_tags("prod"),
            removal_policy=RemovalPolicy.RETAIN,
        ),
    }
)


def stage_config(name: str) -> StageConfig:
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; known: {sorted(STAGES)}") from None
