"""Detect (issue 4): the alarms of docs/operations-contract.md, the one alarm topic, the
F05 budget and the service dashboard.

Rules every alarm here follows (the contract):
- The contract name is ``<catalogue id>-<what>``; per-function alarms carry the function's
  logical name (``F07-TakePayment-duration-near-timeout``). ``AlarmName`` is the stage's prefix
  plus it (``StageConfig.alarm_name``: ``<service>-prod-F07-...``), so stages never collide.
- The description's first line says what fired and why it matters; the second is
  ``Runbook: <failure(id).runbook_url>`` (infra/catalogue.py).
- ``TreatMissingData`` is explicit; alarm and OK actions go to the one KMS-encrypted topic.
- Thresholds come from ``StageConfig.alarms`` or from the limits the stack itself configures
  (reserved concurrency, timeouts, memory, the proxy's connection budget), never from here.

The dashboard is drawn by cdk-monitoring-constructs with all of its own alarms off: the
contract's alarms are the only ones, and they are shown on the dashboard's alarm widget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aws_cdk as cdk
import cdk_monitoring_constructs as mc
from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.catalogue import failure
from infra.config import (
    DLQ_RETENTION,
    METRICS_NAMESPACE,
    SAGA_STEPS,
    StageConfig,
    connection_budget,
    saga_execution_timeout_s,
    saga_step_invocations_worst_case,
)
from infra.functions import HardenedFunction
from infra.nag import acknowledge
from infra.queues import Queues

# Powertools Metrics as the functions build it (functions/orders_saga/observability.py):
# namespace METRICS_NAMESPACE (service.yml), every business metric with the dimensions
# service=<service> and stage=<stage> (a default dimension, so two stages in one account never
# share a metric).
# ColdStart comes from ``log_metrics(capture_cold_start_metric=True)`` as its own EMF blob with
# service and function_name=<the function's physical name> only (Powertools adds no default
# dimensions to it); the physical name carries the stack name, so it is per stage too.
EMF_NAMESPACE: Final = METRICS_NAMESPACE
COLD_START_METRIC: Final = "ColdStart"
BUSINESS_METRICS: Final = (
    "OrdersAccepted",
    "OrdersConfirmed",
    "OrdersFailed",
    "OrdersCompensated",
    "PaymentLatency",
    "PaymentsTaken",
    "PaymentsRefunded",
    "DuplicatesSuppressed",
    "MessagesRejected",
    "PaymentCircuitOpened",
    "UnitsReserved",
)

PERIOD: Final = Duration.minutes(5)
# Lambda publishes ConcurrentExecutions and RDS Proxy its connection counts per minute; the
# F05/F06 alarms want the level held for several minutes, not one spike.
MINUTE: Final = Duration.minutes(1)
SUSTAINED_MINUTES: Final = 5
# Rates over executions (F03, F08) use periods longer than the worst-case execution (402 s,
# infra/config.py), so an execution's retries and its end mostly fall in the period it
# started in and the ratio does not swing between neighbouring periods.
RATE_PERIOD: Final = Duration.minutes(15)
# F22: what one order costs on its happy path: Api, Intake (at most once; batches cost less)
# and the three forward steps. Migrate runs once per deploy and is noise next to this.
HAPPY_PATH_INVOCATIONS_PER_ORDER: Final = 5
SAGA_FAILURE_ALARM: Final = "F08-saga-failure-rate-high"
# Unit conversions for CloudWatch's native units.
MS_PER_S: Final = 1000
US_PER_MS: Final = 1000


@dataclass(frozen=True)
class LogSignal:
    """A log metric filter on every function's log group, and the alarm on its count."""

    failure_id: str
    alarm_name: str
    metric_name: str
    terms: tuple[str, ...]  # any of them, anywhere in the JSON line (case-sensitive)
    summary: str


LOG_SIGNALS: Final = (
    # F14: psycopg surfaces PostgreSQL/RDS Proxy login failures ("PAM authentication failed",
    # "password authentication failed"); the payment adapter raises "rejected our API key"
    # when the provider refuses the key even after re-reading the secret.
    LogSignal(
        "F14",
        "F14-db-auth-failures",
        "AuthFailures",
        ("authentication failed", "rejected our API key"),
        "A function failed to authenticate to the database or the payment provider: an "
        "expired IAM token, a rotated secret not picked up, or a revoked grant",
    ),
    # F16: the runtime's init failures; the function never reaches its handler.
    LogSignal(
        "F16",
        "F16-import-errors",
        "InitErrors",
        ("Runtime.ImportModuleError", "Runtime.HandlerNotFound", "Runtime.UserCodeSyntaxError"),
        "A function failed to initialise (import, handler or syntax error): the deployed "
        "asset does not run on the Lambda runtime and every invocation fails",
    ),
    # F20: botocore's AccessDenied/AccessDeniedException and the "User: ... is not
    # authorized to perform: <action>" message of most AWS services.
    LogSignal(
        "F20",
        "F20-access-denied",
        "AccessDenied",
        ("AccessDenied", "AccessDeniedException", "not authorized to perform"),
        "A function was denied an AWS action: its role lacks a permission the code needs "
        "(or a key/resource policy refuses it), so that path fails on every call",
    ),
)


class Monitoring(Construct):
    """Alarms, alarm topic, budget and dashboard for one stage of the orders saga."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        functions: Mapping[str, HardenedFunction],
        queues: Queues,
        state_machine: sfn.IStateMachine,
        proxy: rds.IDatabaseProxy,
        rest_api: apigw.IRestApi,
        stage_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        missing = sorted({*SAGA_STEPS, "Api"} - set(functions))
        if missing:
            raise ValueError(f"Monitoring needs every function; missing {missing}")
        self._config = config
        self._thresholds = config.alarms
        self._functions = functions
        self._stack = cdk.Stack.of(self)
        # Log-derived metrics carry no dimensions (a metric filter can only take dimension
        # values from the log line), so the stage is in the namespace instead.
        self._log_namespace = f"{EMF_NAMESPACE}/{config.name}/logs"
        self.alarms: dict[str, cloudwatch.IAlarm] = {}
        self._saga_failure_alarm: cloudwatch.IAlarm | None = None
        self._action = cw_actions.SnsAction(self._alarm_topic())
        self._alarm_scope = Construct(self, "Alarms")

        self._business_alarms()
        self._queue_alarms(queues)
        self._watched: set[str] = set()
        for hardened in functions.values():
            self.watch_function(hardened)
        self._log_alarms()
        self._saga_alarms(state_machine)
        self._api_alarms(rest_api, stage_name)
        self._proxy_alarms(proxy)
        self._invocation_rate_alarm()
        self._topic_alarm()
        self.budget = self._budget()
        self._dashboard(queues, state_machine, proxy, rest_api, stage_name)

    @property
    def saga_failure_alarm(self) -> cloudwatch.IAlarm:
        """F08 failure rate, for CodeDeploy to roll a saga step back on (F12).

        Returned by its (fixed, contract) name rather than as the alarm resource: the alarm's
        metric names the state machine, whose role may invoke the step aliases, whose
        deployment groups would name the alarm: a Ref would close that loop in CloudFormation.
        """
        if self._saga_failure_alarm is None:
            assert SAGA_FAILURE_ALARM in self.alarms
            self._saga_failure_alarm = cloudwatch.Alarm.from_alarm_name(
                self, "SagaFailureAlarmByName", self._config.alarm_name(SAGA_FAILURE_ALARM)
            )
        return self._saga_failure_alarm

    # -- the topic -----------------------------------------------------------------------

    def _alarm_topic(self) -> sns.Topic:
        """One encrypted topic; CloudWatch alarms and AWS Budgets may publish to it."""
        account, region = self._stack.account, self._stack.region
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"{self._config.service} {self._config.name} alarm topic",
            enable_key_rotation=True,
            removal_policy=self._config.removal_policy,
        )
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{self._config.service} {self._config.name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        publishers = {
            "cloudwatch.amazonaws.com": f"arn:{self._stack.partition}:cloudwatch:{region}:"
            f"{account}:alarm:*",
            "budgets.amazonaws.com": f"arn:{self._stack.partition}:budgets::{account}:*",
        }
        for service, source_arn in publishers.items():
            # Scoped to our own account's alarms/budgets (confused-deputy protection).
            conditions = {
                "StringEquals": {"aws:SourceAccount": account},
                "ArnLike": {"aws:SourceArn": source_arn},
            }
            self.topic.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["sns:Publish"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=[self.topic.topic_arn],
                    conditions=conditions,
                )
            )
            # An SSE-KMS topic only accepts what the publisher can encrypt for it.
            key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=["*"],  # in a key policy "*" is this key
                    conditions=conditions,
                )
            )
        # F17: an undeliverable email is parked, not dropped, and its own alarm fires.
        self._email_dlq: sqs.Queue | None = None
        if self._config.alarm_emails:
            self._email_dlq = sqs.Queue(
                self,
                "AlarmEmailDlq",
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=DLQ_RETENTION,
                removal_policy=self._config.removal_policy,
            )
            acknowledge(
                self._email_dlq,
                {
                    "AwsSolutions-SQS3": "F17: this IS a dead-letter queue, of the alarm "
                    "email subscriptions (an SNS redrive target, which cdk-nag does not "
                    "recognise); F17-alarm-email-dlq-not-empty watches it",
                },
            )
        for index, address in enumerate(self._config.alarm_emails):
            sns.Subscription(
                self,
                f"AlarmEmail{index}",
                topic=self.topic,
                protocol=sns.SubscriptionProtocol.EMAIL,
                endpoint=address,
                dead_letter_queue=self._email_dlq,
            )
        return self.topic

    # -- the one way an alarm is made -----------------------------------------------------

    def _alarm(
        self,
        name: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        summary: str,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        ),
        evaluation_periods: int = 1,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """``name`` starts with its catalogue id, which picks the runbook it links."""
        failure_id = name.split("-", 1)[0]
        alarm = cloudwatch.Alarm(
            self._alarm_scope,
            name,
            alarm_name=self._config.alarm_name(name),
            alarm_description=f"{summary}.\nRunbook: {failure(failure_id).runbook_url}",
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=evaluation_periods,
            treat_missing_data=missing,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[name] = alarm
        return alarm

    def _emf(self, metric_name: str, **dimensions: str) -> cloudwatch.Metric:
        # ColdStart is Powertools' own blob: function_name instead of the stage (see above).
        stage = {} if metric_name == COLD_START_METRIC else {"stage": self._config.name}
        return cloudwatch.Metric(
            namespace=EMF_NAMESPACE,
            metric_name=metric_name,
            dimensions_map={"service": self._config.service, **stage, **dimensions},
            statistic=cloudwatch.Stats.SUM,
            period=PERIOD,
        )

    @staticmethod
    def _sum(
        metrics: Sequence[cloudwatch.IMetric], prefix: str
    ) -> tuple[str, dict[str, cloudwatch.IMetric]]:
        """Metric-math sum of several series; a series without data counts as 0."""
        using = {f"{prefix}{index}": metric for index, metric in enumerate(metrics)}
        return " + ".join(f"FILL({key}, 0)" for key in using), using

    # -- alarm families ----------------------------------------------------------------------

    def _business_alarms(self) -> None:
        """EMF business signals the function code emits (F01, F09, F11, F18, F19)."""
        t = self._thresholds
        emf_alarms = (
            (
                "F01-duplicates-suppressed-high",
                "DuplicatesSuppressed",
                t.duplicates_suppressed,
                "Idempotency suppressed many duplicate deliveries in 5 minutes: a client, "
                "SQS or a saga retry is redelivering in a loop",
            ),
            (
                "F09-payment-refunds-high",
                "PaymentsRefunded",
                t.payment_refunds,
                "Many payments were refunded in 5 minutes: orders fail after the charge "
                "(ConfirmOrder failures or charges whose response was lost)",
            ),
            (
                "F11-messages-rejected",
                "MessagesRejected",
                0,
                "Intake rejected an invalid order message to the DLQ: a producer sends bad or "
                "oversized input that the API did not stop",
            ),
            (
                "F18-unknown-message-versions",
                "MessagesRejected",
                0,
                "Intake rejected a message it could not read, e.g. a schema_version it does "
                "not know: a producer runs ahead of or behind the consumers",
            ),
            (
                "F19-payment-circuit-open",
                "PaymentCircuitOpened",
                0,
                "The payment provider circuit breaker opened: the provider fails or times "
                "out and payments are failing fast; pause intake if it persists",
            ),
        )
        for name, metric_name, threshold, summary in emf_alarms:
            self._alarm(name, metric=self._emf(metric_name), threshold=threshold, summary=summary)

        api_name = self._functions["Api"].function.function_name
        self._alarm(
            "F04-Api-cold-starts-high",
            metric=self._emf(COLD_START_METRIC, function_name=api_name),
            threshold=t.api_cold_starts,
            summary="Many Api execution environments started in 5 minutes: a spike or deploy "
            "outruns provisioned concurrency and clients see init latency",
        )

    def _queue_alarms(self, queues: Queues) -> None:
        """Anything in a DLQ or the needs-attention queue is an order a human must look at."""
        self._not_empty(
            "F02-intake-dlq-not-empty",
            queues.orders_dlq,
            "The intake DLQ holds messages: poison or invalid orders were parked after "
            "maxReceiveCount attempts and are not being processed",
        )
        self._not_empty(
            "F08-needs-attention-not-empty",
            queues.needs_attention,
            "A saga compensation failed after its retries: an order is half undone (payment "
            "or stock) and waits in the needs-attention queue for an operator",
        )
        # F17: every other DLQ under the Queues construct (none today besides the intake one).
        for queue in queues.node.find_all():
            dlq = queue.dead_letter_queue if isinstance(queue, sqs.Queue) else None
            if dlq is None or dlq.queue is queues.orders_dlq:
                continue
            owner = queue.node.scope.node.id if queue.node.scope else queue.node.id
            self._not_empty(
                f"F17-{owner}-dlq-not-empty",
                dlq.queue,
                f"The {owner} DLQ holds messages: deliveries failed for good and nothing "
                "processes them until an operator redrives them",
            )
        age = self._thresholds.intake_oldest_message_age_s
        self._alarm(
            "F02-intake-oldest-message-age",
            metric=queues.orders_queue.metric_approximate_age_of_oldest_message(
                period=PERIOD, statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=age,
            summary=f"The oldest order in the intake queue is over {age} s old: Intake is "
            "paused, throttled or failing, and orders are not reaching the saga",
        )

    def _not_empty(self, name: str, queue: sqs.IQueue, summary: str) -> None:
        self._alarm(
            name,
            metric=queue.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=0,
            summary=summary,
        )

    def watch_function(self, hardened: HardenedFunction) -> None:
        """Every per-function alarm (F05, F07, F21, F22) and log filter (F14, F16, F20) for
        one function, against the limits its settings configure.

        Called for each function given to the constructor; call it again for a function
        built later (the F12 pre-traffic hook) so the contract's "one per function" holds.
        """
        logical_name = hardened.logical_name
        if logical_name in self._watched:
            raise ValueError(f"{logical_name} is already watched")
        self._watched.add(logical_name)
        fn = hardened.function
        settings = self._config.function(logical_name)
        near = self._thresholds.near_limit_fraction
        percent = round(near * 100)
        self._alarm(
            f"F05-{logical_name}-concurrency-near-reserved",
            metric=fn.metric(
                "ConcurrentExecutions", period=MINUTE, statistic=cloudwatch.Stats.MAXIMUM
            ),
            threshold=near * settings.reserved_concurrency,
            evaluation_periods=SUSTAINED_MINUTES,
            summary=f"{logical_name} has run above {percent}% of its reserved concurrency "
            f"({settings.reserved_concurrency}) for {SUSTAINED_MINUTES} minutes: fan-out "
            "is near its bound and throttling comes next",
        )
        self._alarm(
            f"F05-{logical_name}-throttles",
            metric=fn.metric_throttles(period=PERIOD, statistic=cloudwatch.Stats.SUM),
            threshold=0,
            summary=f"{logical_name} was throttled: demand exceeded its reserved "
            "concurrency, so callers retry or messages wait",
        )
        self._alarm(
            f"F07-{logical_name}-duration-near-timeout",
            metric=fn.metric_duration(period=PERIOD, statistic=cloudwatch.Stats.MAXIMUM),
            threshold=near * settings.timeout_s * MS_PER_S,
            summary=f"{logical_name} ran longer than {percent}% of its {settings.timeout_s} s "
            "timeout: a dependency hangs and invocations are about to be killed",
        )
        self._alarm(
            f"F22-{logical_name}-recursive-invocations-dropped",
            metric=fn.metric(
                "RecursiveInvocationsDropped", period=PERIOD, statistic=cloudwatch.Stats.SUM
            ),
            threshold=0,
            summary=f"Lambda stopped a recursive loop through {logical_name}: something it "
            "writes to triggers it again",
        )

        for signal in LOG_SIGNALS:
            logs.MetricFilter(
                self,
                f"{signal.metric_name}{logical_name}",
                log_group=hardened.log_group,
                filter_pattern=logs.FilterPattern.any_term(*signal.terms),
                metric_namespace=self._log_namespace,
                metric_name=signal.metric_name,
                metric_value="1",
            )

        memory_metric = f"{logical_name}MaxMemoryUsedMB"
        # F21: the JSON platform.report line Lambda writes after each invocation,
        # {"type": "platform.report", "record": {"metrics": {"maxMemoryUsedMB": ...}}}.
        # Lambda logs it at INFO: the function's system log level must let INFO through.
        logs.MetricFilter(
            self,
            memory_metric,
            log_group=hardened.log_group,
            filter_pattern=logs.FilterPattern.string_value("$.type", "=", "platform.report"),
            metric_namespace=self._log_namespace,
            metric_name=memory_metric,
            metric_value="$.record.metrics.maxMemoryUsedMB",
            unit=cloudwatch.Unit.MEGABYTES,
        )
        self._alarm(
            f"F21-{logical_name}-memory-near-limit",
            metric=self._log_metric(memory_metric, cloudwatch.Stats.MAXIMUM),
            threshold=near * settings.memory_mb,
            summary=f"{logical_name} used more than {percent}% of its {settings.memory_mb} "
            "MB: the next larger input or a leak ends in an out-of-memory crash",
        )

    def _log_alarms(self) -> None:
        """F14, F16, F20: one alarm per signal over the filters of every watched function."""
        for signal in LOG_SIGNALS:
            self._alarm(
                signal.alarm_name,
                metric=self._log_metric(signal.metric_name),
                threshold=0,
                summary=signal.summary,
            )

    def _log_metric(
        self, metric_name: str, statistic: str = cloudwatch.Stats.SUM
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=self._log_namespace,
            metric_name=metric_name,
            statistic=statistic,
            period=PERIOD,
        )

    def _saga_alarms(self, state_machine: sfn.IStateMachine) -> None:
        t = self._thresholds
        steps = [self._functions[name].function for name in SAGA_STEPS]
        started = state_machine.metric_started(period=RATE_PERIOD, statistic=cloudwatch.Stats.SUM)
        enough = f"started >= {t.min_samples_for_rate}"

        self._alarm(
            "F07-saga-executions-timed-out",
            metric=state_machine.metric_timed_out(period=PERIOD, statistic=cloudwatch.Stats.SUM),
            threshold=0,
            summary="A saga execution hit its execution timeout: a step kept retrying or "
            "hanging past the computed worst case, and the order stopped mid-way",
        )
        self._alarm(
            "F08-saga-executions-aborted",
            metric=state_machine.metric_aborted(period=PERIOD, statistic=cloudwatch.Stats.SUM),
            threshold=0,
            summary="A saga execution was aborted (stopped by hand or by a deploy): its order "
            "got no compensation and must be checked",
        )
        failed = state_machine.metric_failed(period=RATE_PERIOD, statistic=cloudwatch.Stats.SUM)
        self._alarm(
            SAGA_FAILURE_ALARM,
            metric=cloudwatch.MathExpression(
                expression=f"IF({enough}, 100 * FILL(failed, 0) / started, 0)",
                using_metrics={"failed": failed, "started": started},
                period=RATE_PERIOD,
                label="failed executions per 100 started",
            ),
            threshold=t.saga_failure_rate_percent,
            summary=f"Over {t.saga_failure_rate_percent:g}% of saga executions failed in 15 "
            "minutes: more orders end compensated (or stuck) than business declines explain",
        )

        worst = saga_step_invocations_worst_case(self._config)
        total, using = self._sum(
            [
                fn.metric_invocations(period=RATE_PERIOD, statistic=cloudwatch.Stats.SUM)
                for fn in steps
            ],
            "step",
        )
        self._alarm(
            "F03-retry-amplification",
            metric=cloudwatch.MathExpression(
                expression=f"IF({enough}, ({total}) / started, 0)",
                using_metrics={**using, "started": started},
                period=RATE_PERIOD,
                label="saga step invocations per started execution",
            ),
            threshold=t.retry_amplification_fraction * worst,
            summary=f"Saga steps ran over {t.retry_amplification_fraction * worst:g} times per "
            f"execution (worst case {worst}, happy path 3): retries are widespread and "
            "multiply load on a struggling dependency",
        )
        total, using = self._sum(
            [fn.metric_errors(period=PERIOD, statistic=cloudwatch.Stats.SUM) for fn in steps],
            "step",
        )
        self._alarm(
            "F10-saga-step-errors",
            metric=cloudwatch.MathExpression(
                expression=total, using_metrics=using, period=PERIOD, label="saga step errors"
            ),
            threshold=t.saga_step_errors,
            summary="Saga steps raised many errors in 5 minutes: conflicting executions, "
            "in-progress idempotency records or failing dependencies (declines count too)",
        )
        # Keeps the 15-minute rate periods honest if the retry budget grows (F07 arithmetic).
        if RATE_PERIOD.to_seconds() < saga_execution_timeout_s(self._config):
            raise ValueError("RATE_PERIOD must cover the saga's worst-case execution")

    def _api_alarms(self, rest_api: apigw.IRestApi, stage_name: str) -> None:
        t = self._thresholds

        def api_metric(metric_name: str, statistic: str, period: Duration) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/ApiGateway",
                metric_name=metric_name,
                dimensions_map={"ApiName": rest_api.rest_api_name, "Stage": stage_name},
                statistic=statistic,
                period=period,
            )

        self._alarm(
            "F11-api-4xx-rate-high",
            metric=cloudwatch.MathExpression(
                expression=f"IF(requests >= {t.min_samples_for_rate}, "
                "100 * FILL(client_errors, 0) / requests, 0)",
                using_metrics={
                    "client_errors": api_metric("4XXError", cloudwatch.Stats.SUM, PERIOD),
                    "requests": api_metric("Count", cloudwatch.Stats.SUM, PERIOD),
                },
                period=PERIOD,
                label="4XX responses per 100 requests",
            ),
            threshold=t.api_4xx_rate_percent,
            summary=f"Over {t.api_4xx_rate_percent:g}% of API requests were rejected (4XX): a "
            "client sends invalid or unauthorised requests, or a release broke the contract",
        )
        self._alarm(
            "F13-api-5xx",
            metric=api_metric("5XXError", cloudwatch.Stats.SUM, PERIOD),
            threshold=0,
            summary="The API answered 5XX: the Api function failed, timed out or was throttled "
            "and a client got no order",
        )
        self._alarm(
            "F13-api-p99-latency",
            metric=api_metric("Latency", cloudwatch.Stats.percentile(99), PERIOD),
            threshold=t.api_p99_latency_ms,
            summary=f"The API's p99 latency exceeded {t.api_p99_latency_ms} ms: the Api function "
            "or its dependencies (database, queue) are slow",
        )

    def _proxy_alarms(self, proxy: rds.IDatabaseProxy) -> None:
        t = self._thresholds
        budget = connection_budget(self._config)
        near = t.near_limit_fraction

        def proxy_metric(metric_name: str, statistic: str) -> cloudwatch.Metric:
            # RDS publishes proxy metrics per proxy node; Sum over a minute adds them up.
            return cloudwatch.Metric(
                namespace="AWS/RDS",
                metric_name=metric_name,
                dimensions_map={"ProxyName": proxy.db_proxy_name},
                statistic=statistic,
                period=MINUTE,
            )

        self._alarm(
            "F06-proxy-connections-near-budget",
            metric=proxy_metric("ClientConnections", cloudwatch.Stats.SUM),
            threshold=near * budget.capacity,
            evaluation_periods=SUSTAINED_MINUTES,
            summary=f"RDS Proxy client connections stayed above {round(near * 100)}% of the "
            f"connection budget ({budget.capacity}; functions may open {budget.demand}): "
            "connections leak or something else connects",
        )
        self._alarm(
            "F06-proxy-borrow-latency",
            metric=proxy_metric(
                "DatabaseConnectionsBorrowLatency", cloudwatch.Stats.percentile(99)
            ),
            threshold=t.proxy_borrow_latency_p99_ms * US_PER_MS,  # the metric is in µs
            evaluation_periods=SUSTAINED_MINUTES,
            summary=f"RDS Proxy p99 borrow latency stayed above {t.proxy_borrow_latency_p99_ms}"
            " ms: clients queue for a database connection and will hit the borrow timeout",
        )
        self._alarm(
            "F06-proxy-sessions-pinned",
            metric=proxy_metric(
                "DatabaseConnectionsCurrentlySessionPinned", cloudwatch.Stats.MAXIMUM
            ),
            threshold=t.proxy_pinned_connections,
            evaluation_periods=SUSTAINED_MINUTES,
            summary="RDS Proxy kept database connections pinned to client sessions (a prepared "
            "statement, SET, temporary table or advisory lock): each pinned client holds a "
            "database connection for its whole life, so the connection budget no longer holds",
        )

    def _invocation_rate_alarm(self) -> None:
        """F22: total invocations above what the API can admit, whatever the cause."""
        api = self._config.api
        admitted = api.throttle_rate_limit * PERIOD.to_seconds() * HAPPY_PATH_INVOCATIONS_PER_ORDER
        threshold = math.ceil(admitted * self._thresholds.invocation_rate_headroom)
        total, using = self._sum(
            [
                hardened.function.metric_invocations(period=PERIOD, statistic=cloudwatch.Stats.SUM)
                for hardened in self._functions.values()
            ],
            "fn",
        )
        self._alarm(
            "F22-invocation-rate-high",
            metric=cloudwatch.MathExpression(
                expression=total, using_metrics=using, period=PERIOD, label="all invocations"
            ),
            threshold=threshold,
            summary=f"The service ran over {threshold} invocations in 5 minutes, more than "
            "full-throttle API traffic explains: a loop, a misfire or a retry storm runs up "
            "the bill",
        )

    def _topic_alarm(self) -> None:
        if self._email_dlq is not None:
            self._not_empty(
                "F17-alarm-email-dlq-not-empty",
                self._email_dlq,
                "Alarm emails could not be delivered and were parked in their DLQ: alarms "
                "fire but the on-call address does not receive them",
            )
        self._alarm(
            "F17-alarm-topic-notifications-failed",
            metric=self.topic.metric_number_of_notifications_failed(
                period=PERIOD, statistic=cloudwatch.Stats.SUM
            ),
            threshold=0,
            summary="The alarm topic failed to deliver notifications: alarms fire but nobody "
            "is told; check the subscriptions and the dashboard's alarm widget",
        )

    # -- budget (F05, F22) -----------------------------------------------------------------

    def _budget(self) -> budgets.CfnBudget:
        """Monthly cost budget, notifying the alarm topic.

        Account-wide on purpose: a cost-allocation tag filter reads $0 (and never fires) until
        someone activates the tag in Billing, and each stage is meant to own its account.
        """
        subscriber = budgets.CfnBudget.SubscriberProperty(
            address=self.topic.topic_arn, subscription_type="SNS"
        )
        notifications = [
            budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=percent,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=[subscriber],
            )
            # 80% of the money actually spent: time to look; 100% forecast: it will overrun.
            for kind, percent in (("ACTUAL", 80), ("FORECASTED", 100))
        ]
        return budgets.CfnBudget(
            self,
            "MonthlyBudget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=f"{self._config.service}-{self._config.name}-monthly",
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(
                    amount=self._config.monthly_budget_usd, unit="USD"
                ),
            ),
            notifications_with_subscribers=notifications,
        )

    # -- dashboard (F13) -------------------------------------------------------------------

    def _dashboard(
        self,
        queues: Queues,
        state_machine: sfn.IStateMachine,
        proxy: rds.IDatabaseProxy,
        rest_api: apigw.IRestApi,
        stage_name: str,
    ) -> None:
        """cdk-monitoring-constructs draws the widgets; it creates no alarms of its own."""
        factory = mc.DefaultDashboardFactory(
            self,
            "DashboardFactory",
            dashboard_name_prefix=f"{self._config.service}-{self._config.name}",
            create_dashboard=True,
            create_summary_dashboard=False,
            create_alarm_dashboard=False,
        )
        facade = mc.MonitoringFacade(self, "Facade", dashboard_factory=factory)
        facade.add_large_header(f"{self._config.service} ({self._config.name})")
        facade.add_widget(
            cloudwatch.AlarmStatusWidget(
                title="Contract alarms (docs/operations-contract.md)",
                alarms=list(self.alarms.values()),
                width=24,
                height=8,
            )
        )
        facade.monitor_custom(
            human_readable_name="Business (EMF)",
            alarm_friendly_name="Business",
            metric_groups=[
                mc.CustomMetricGroup(
                    title="Orders",
                    metrics=[
                        self._emf(name)
                        for name in (
                            "OrdersAccepted",
                            "OrdersConfirmed",
                            "OrdersCompensated",
                            "OrdersFailed",
                        )
                    ],
                ),
                mc.CustomMetricGroup(
                    title="Payments and stock",
                    metrics=[
                        self._emf(name)
                        for name in ("PaymentsTaken", "PaymentsRefunded", "UnitsReserved")
                    ],
                ),
                mc.CustomMetricGroup(
                    title="Payment provider latency (p99, ms)",
                    metrics=[self._emf("PaymentLatency").with_(statistic="p99")],
                ),
                mc.CustomMetricGroup(
                    title="Contained failures",
                    metrics=[
                        self._emf(name)
                        for name in (
                            "DuplicatesSuppressed",
                            "MessagesRejected",
                            "PaymentCircuitOpened",
                        )
                    ],
                ),
            ],
        )
        facade.monitor_api_gateway(
            api=rest_api, api_stage=stage_name, human_readable_name="API", alarm_friendly_name="Api"
        )
        facade.monitor_sqs_queue_with_dlq(
            queue=queues.orders_queue,
            dead_letter_queue=queues.orders_dlq,
            human_readable_name="Orders queue (intake) and its DLQ",
            alarm_friendly_name="OrdersQueue",
        )
        facade.monitor_sqs_queue(
            queue=queues.needs_attention,
            human_readable_name="Needs-attention queue (failed compensations)",
            alarm_friendly_name="NeedsAttention",
        )
        facade.monitor_step_function(
            state_machine=state_machine, human_readable_name="Saga", alarm_friendly_name="Saga"
        )
        for logical_name, hardened in self._functions.items():
            facade.monitor_lambda_function(
                lambda_function=hardened.function,
                human_readable_name=logical_name,
                alarm_friendly_name=logical_name,
            )

        def proxy_metric(metric_name: str, statistic: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/RDS",
                metric_name=metric_name,
                dimensions_map={"ProxyName": proxy.db_proxy_name},
                statistic=statistic,
                period=MINUTE,
                label=label,
            )

        # cdk-monitoring-constructs has no RDS Proxy monitor: a custom segment (F06, F14).
        facade.monitor_custom(
            human_readable_name="RDS Proxy",
            alarm_friendly_name="RdsProxy",
            metric_groups=[
                mc.CustomMetricGroup(
                    title="Connections",
                    metrics=[
                        proxy_metric("ClientConnections", cloudwatch.Stats.SUM, "client"),
                        proxy_metric("DatabaseConnections", cloudwatch.Stats.SUM, "database"),
                    ],
                ),
                mc.CustomMetricGroup(
                    title="Borrow latency (µs)",
                    metrics=[
                        proxy_metric(
                            "DatabaseConnectionsBorrowLatency",
                            cloudwatch.Stats.percentile(99),
                            "p99",
                        )
                    ],
                ),
                mc.CustomMetricGroup(
                    title="Failed client logins",
                    metrics=[
                        proxy_metric(
                            "ClientConnectionsSetupFailedAuth", cloudwatch.Stats.SUM, "failed"
                        )
                    ],
                ),
            ],
        )
        self.dashboard = factory.dashboard
