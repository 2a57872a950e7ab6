"""The whole local system in one object: PostgreSQL, the fake payment provider, moto built
from the synthesized template, a worker pool per function, the SQS mapping and the API.

``LocalStack`` is what ``make demo``, ``make serve`` and the end-to-end tests run. It adds no
behaviour of its own: it wires the pieces and runs the real Migrate function once, as the CDK
trigger does on deploy.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from devstack import sqs_move_tasks
from devstack.aws import (
    DEFAULT_PAYMENT_API_KEY,
    LOCAL_CREDENTIALS,
    TRACING_OFF_ENV,
    LocalAws,
    LocalResources,
)
from devstack.call_recorder import ACCOUNT_ENV, CALL_LOG_DIR_ENV, start_recording
from devstack.differences import announce
from devstack.event_source import SqsEventSourcePoller
from devstack.gateway import LocalApiGateway
from devstack.lambda_runtime import FunctionPool, Invoker, InvokeResult, LogRecord
from devstack.payment_provider import PaymentProvider
from devstack.pgbouncer import LocalPgBouncer
from devstack.postgres import DEFAULT_MAX_CONNECTIONS, LocalPostgres, PostgresSettings
from devstack.template import CfnTemplate, TemplateError
from devstack.tls import LocalCertificateAuthority
from ops.local_map import DEFAULT_ENDPOINT, LocalStackMap

Say = Callable[[str], None]
LogSink = Callable[[LogRecord], None]

# The demo catalogue: (sku, name, unit price in cents, units in stock). Seeded by the local
# run only; a real deployment's catalogue is not part of the migrations.
DEMO_CATALOGUE: tuple[tuple[str, str, int, int], ...] = (
    ("SKU-APPLE", "Apple", 120, 500),
    ("SKU-PEAR", "Pear", 150, 500),
    ("SKU-COFFEE", "Coffee beans 1 kg", 2450, 200),
    ("SKU-TEA", "Green tea", 890, 200),
    ("SKU-LAST-ONE", "Signed first edition", 9900, 1),
    ("SKU-SOLD-OUT", "Sold-out sneakers", 12000, 0),
)


# How often a wait for the stack to settle looks again. Each look is two local AWS calls of
# ~2 ms; every run (a chaos run, each of make compare's) ends with this wait, so its step is
# the run's added tail (it was 0.2 s, twice: ~0.4 s of idle per run).
_SETTLE_POLL_S = 0.05
_SETTLE_NEAR_END = 10  # running executions below which it looks at that pace


def _say_stderr(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


def _quiet_sink(record: LogRecord) -> None:
    """Default log sink: keep function logs out of the demo's output, but show errors briefly."""
    try:
        line = json.loads(record.line)
    except ValueError:
        return
    if isinstance(line, dict) and line.get("level") == "ERROR":
        summary = str(line.get("message") or line.get("errorMessage", ""))[:160]
        print(f"[{record.function_name}] ERROR {summary}", file=sys.stderr, flush=True)


class InvocationCounter:
    """Counts invocations per order and function: the "attempts" column of the report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_order: dict[str, Counter[str]] = {}

    def record(self, function: str, event: Any) -> None:
        order_id = _order_id_of(event)
        if order_id is None:
            return
        with self._lock:
            self.by_order.setdefault(order_id, Counter())[function] += 1

    def attempts(self, order_id: str) -> int:
        with self._lock:
            return sum(self.by_order.get(order_id, Counter()).values())

    def clear(self) -> None:
        with self._lock:
            self.by_order.clear()


def _order_id_of(event: Any) -> str | None:
    if isinstance(event, dict):
        order = event.get("order")
        if isinstance(order, dict) and isinstance(order.get("order_id"), str):
            return str(order["order_id"])
    return None


@dataclass
class CountingInvoker:
    """Wraps a function's pool so every invocation is counted per order."""

    function: str
    inner: Invoker
    counter: InvocationCounter

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult:
        self.counter.record(self.function, event)
        return self.inner.invoke(event, invoked_function_arn=invoked_function_arn)


def _seed_inventory(
    conn: psycopg.Connection, catalogue: tuple[tuple[str, str, int, int], ...]
) -> None:
    conn.cursor().executemany(
        "INSERT INTO inventory (sku, name, unit_price_cents, available)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (sku) DO NOTHING",
        catalogue,
    )


class LocalStack:
    def __init__(
        self,
        *,
        cdk_out: Path = Path("cdk.out"),
        stack_name: str | None = None,
        pool_size: int = 2,
        retry_sleep_scale: float = 0.01,
        catalogue: tuple[tuple[str, str, int, int], ...] = DEMO_CATALOGUE,
        say: Say = _say_stderr,
        log_sink: LogSink = _quiet_sink,
        api_port: int = 0,
        call_log_dir: Path | None = None,
        provider: PaymentProvider | None = None,
        tracing: bool = True,
        ablations: frozenset[str] = frozenset(),
    ) -> None:
        self.template = CfnTemplate.load(str(cdk_out), stack_name)
        # False: the workers run with Powertools Tracer disabled (devstack.aws TRACING_OFF_ENV;
        # throughput only, the chaos run's default).
        self.tracing = tracing
        self.pool_size = pool_size
        self.retry_sleep_scale = retry_sleep_scale
        self.catalogue = catalogue
        self.say = say
        self.log_sink = log_sink
        self.api_port = api_port
        # F20: every AWS call the functions make, recorded under this directory (one
        # subdirectory per run, devstack/call_recorder.py); the variable lets `make chaos` record.
        env_log_dir = os.environ.get(CALL_LOG_DIR_ENV)
        self.call_log_dir = call_log_dir or (Path(env_log_dir) if env_log_dir else None)
        self.call_log: Path | None = None  # this run's recording, when recording
        self.counter = InvocationCounter()
        self._exit = ExitStack()
        self.postgres: PostgresSettings | None = None
        self.proxy: LocalPgBouncer | None = None
        # The application role's local password: the stand-in for its IAM token (devstack.aws).
        self._app_password = secrets.token_urlsafe(24)
        # A caller may bring its own (e.g. the chaos run's, with a fault hook); same key.
        self.provider = provider or PaymentProvider(api_key=DEFAULT_PAYMENT_API_KEY)
        self.aws: LocalAws | None = None
        self.resources: LocalResources | None = None
        self.pools: dict[str, FunctionPool] = {}
        self.poller: SqsEventSourcePoller | None = None
        self.gateway: LocalApiGateway | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        # Issue 11: containments switched off for this run (devstack/ablations.py).
        self._requested_ablations = ablations
        self.ablations: frozenset[str] = frozenset()
        self._hardened: dict[str, Any] = {}  # what apply_ablations switches back to
        self._tokens: dict[str, str] = {}

    # lifecycle

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        # The servers copy what they need into their own directories; only this process and
        # the function workers (the same user) read the CA bundle here.
        tls_dir = self._exit.enter_context(tempfile.TemporaryDirectory(prefix="orders-tls-"))
        ca = LocalCertificateAuthority(Path(tls_dir))
        pg = self._exit.enter_context(LocalPostgres(ca=ca))
        self.postgres = pg.settings
        announce(
            self.say,
            "local-ca",
            f"PostgreSQL on 127.0.0.1:{self.postgres.port} ({pg.startup_seconds:.1f} s), "
            "TLS only (rds.force_ssl); functions verify it and the proxy with this run's CA "
            "instead of the shipped Amazon/RDS bundles",
        )
        self.proxy = self._exit.enter_context(
            LocalPgBouncer(self.postgres, ca, pool_size=self._proxy_pool_size())
        )
        proxy = self.proxy.settings
        announce(
            self.say,
            "pgbouncer-for-rds-proxy",
            f"pgbouncer on 127.0.0.1:{proxy.port} in front of it (RDS Proxy stand-in: "
            f"transaction pooling, {self.proxy.pool_size} server connections, TLS required, "
            "startup options refused)",
        )
        announce(
            self.say,
            "password-for-iam-token",
            "the service functions log in to the proxy with a password from a local secret "
            "instead of an RDS IAM token",
        )
        self._exit.enter_context(self.provider)
        self.say(f"fake payment provider on {self.provider.base_url}")
        self.aws = LocalAws(
            self.template,
            postgres=self.postgres,
            proxy=proxy,
            app_password=self._app_password,
            payment_api_url=self.provider.base_url,
            payment_api_key=DEFAULT_PAYMENT_API_KEY,
            retry_sleep_scale=self.retry_sleep_scale,
            say=self.say,
        )
        self.resources = self._exit.enter_context(self.aws)
        self._exit.enter_context(self._message_move_tasks())
        self._start_functions()
        self._migrate_and_seed()
        self._start_intake()
        self._start_gateway(self.api_port)
        if self._requested_ablations:
            self.apply_ablations(self._requested_ablations)
        self.say(f"local stack ready in {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        for pool in self.pools.values():
            pool.stop()
        self.pools = {}
        self._clients.clear()
        self._exit.close()

    # wiring

    def _aws(self) -> tuple[LocalAws, LocalResources]:
        if self.aws is None or self.resources is None:
            raise RuntimeError("the local stack is not running; use it as a context manager")
        return self.aws, self.resources

    def _start_functions(self) -> None:
        aws, resources = self._aws()
        extra = self._recording_env(aws)
        if not self.tracing:
            extra.update(TRACING_OFF_ENV)
            announce(
                self.say,
                "tracing-off",
                "tracing off (throughput only): the functions run with "
                + ", ".join(f"{k}={v}" for k, v in TRACING_OFF_ENV.items()),
            )
        for logical_id, fn in resources.functions.items():
            size = min(self.pool_size, fn.reserved_concurrency or self.pool_size)
            config = replace(fn.config, environment={**fn.config.environment, **extra})
            pool = FunctionPool(config, size=size, log_sink=self.log_sink)
            self.pools[logical_id] = pool
            aws.route_lambda(fn.name, CountingInvoker(logical_id, pool, self.counter))

    def _recording_env(self, aws: LocalAws) -> dict[str, str]:
        """What tells each worker to record its AWS calls (F20); nothing when not recording."""
        if self.call_log_dir is None:
            return {}
        self.call_log = start_recording(self.call_log_dir, aws.template, aws.resolver.physical)
        return {CALL_LOG_DIR_ENV: str(self.call_log), ACCOUNT_ENV: aws.template.account_id}

    def invoker(self, handler_module: str) -> Invoker:
        """The pool of the function whose handler module ends in ``handler_module``."""
        _, resources = self._aws()
        fn = resources.function(handler_module)
        return CountingInvoker(fn.logical_id, self.pools[fn.logical_id], self.counter)

    # issue 11: switching containments off and on, and a clean slate between runs

    def apply_ablations(self, keys: frozenset[str]) -> None:
        """Switch exactly ``keys`` off (devstack/ablations.py) and every other one back on.

        Workers of a function whose patches change are parked (``FunctionPool.switch_config``):
        the next invocation starts new ones with the new ``DEVSTACK_ABLATIONS`` (a cold start),
        unless workers parked with exactly those patches exist, which serve again (switching
        back to the hardened app reuses its warm environments). Call it on a settled stack."""
        from devstack import ablations as abl

        keys = abl.parse(keys)
        _, resources = self._aws()
        if not self._hardened:
            self._remember_hardened()
        for logical_id, pool in self.pools.items():
            fn = resources.functions[logical_id]
            module = fn.config.handler.rsplit(".", 2)[-2]
            wanted = ",".join(sorted(abl.worker_keys(keys, module)))
            env = dict(pool.config.environment)
            if env.get(abl.ABLATIONS_ENV, "") == wanted:
                continue
            env.pop(abl.ABLATIONS_ENV, None)
            if wanted:
                env[abl.ABLATIONS_ENV] = wanted
            pool.switch_config(replace(pool.config, environment=env))
        sfn = self._client("stepfunctions")
        definition = abl.ablate_definition(self._hardened["definition"], keys)
        sfn.update_state_machine(stateMachineArn=resources.state_machine_arn, definition=definition)
        redrive = "" if "F02-orders-dlq" in keys else self._hardened["redrive"]
        self._client("sqs").set_queue_attributes(
            QueueUrl=resources.orders_queue_url, Attributes={"RedrivePolicy": redrive}
        )
        if self.poller is not None:
            self.poller.report_batch_item_failures = (
                self._hardened["partial_batch"] and "F02-partial-batch-response" not in keys
            )
        with self.db() as conn:
            conn.execute(
                "ALTER TABLE inventory DROP CONSTRAINT IF EXISTS inventory_available_check"
            )
            if "F10-stock-guards" not in keys:
                # NOT VALID: rows an ablated run drove negative stay until the next reset
                # re-seeds the table; every new write is checked again at once.
                conn.execute(
                    "ALTER TABLE inventory ADD CONSTRAINT inventory_available_check"
                    " CHECK (available >= 0) NOT VALID"
                )
        # A provider that takes requests without a key, as most real ones do.
        self.provider.require_idempotency_key = "F09-provider-idempotency-key" not in keys
        self.ablations = keys
        for key in sorted(keys):
            announce(
                self.say,
                "ablation",
                f"containment switched off for this run: {key} ({abl.BY_KEY[key].containment})",
            )

    def _remember_hardened(self) -> None:
        _, resources = self._aws()
        self._hardened["definition"] = self._client("stepfunctions").describe_state_machine(
            stateMachineArn=resources.state_machine_arn
        )["definition"]
        attrs = self._client("sqs").get_queue_attributes(
            QueueUrl=resources.orders_queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]
        self._hardened["redrive"] = attrs.get("RedrivePolicy", "")
        self._hardened["partial_batch"] = bool(
            self.poller is not None and self.poller.report_batch_item_failures
        )

    def reset_for_run(self, catalogue: tuple[tuple[str, str, int, int], ...]) -> None:
        """A clean slate for the next run on this stack (``make compare``): no order, charge,
        queued message or running execution of the last run; ``catalogue`` seeded afresh.
        Idempotency records stay: each run's keys, and so its order ids, are its own."""
        _, resources = self._aws()
        sfn = self._client("stepfunctions")
        for execution in self.running_executions():
            sfn.stop_execution(executionArn=execution["executionArn"])
        # A stopped execution's task in flight still finishes (and may still charge): wait
        # for every environment to be idle before the ledger and tables are emptied.
        deadline = time.monotonic() + 60
        while any(pool.busy for pool in self.pools.values()):
            if time.monotonic() > deadline:
                raise TimeoutError("function environments still busy after 60 s")
            time.sleep(0.2)
        urls = {
            resources.orders_queue_url,
            resources.orders_dlq_url,
            resources.intake_dlq_url,
            resources.needs_attention_queue_url,
        }
        for url in urls - {None}:
            self._empty_queue(str(url))
        with self.db() as conn:
            conn.execute("TRUNCATE order_events, payments, reservations, orders")
            conn.execute("DELETE FROM inventory")
            _seed_inventory(conn, catalogue)
        self.catalogue = catalogue
        self.provider.ledger.reset()
        self.provider.faults.reset()
        self.counter.clear()

    def _empty_queue(self, queue_url: str, timeout_s: float = 30.0) -> None:
        """Delete every message (PurgeQueue is allowed once a minute; runs are shorter)."""
        sqs = self._client("sqs")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60
            ).get("Messages", [])
            if batch:
                sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(batch)
                    ],
                )
            elif self._holds_all(queue_url, 0):
                return
            else:
                time.sleep(0.1)
        raise TimeoutError(f"{queue_url} still holds messages after {timeout_s} s")

    def _migrate_and_seed(self) -> None:
        # The deployed stack runs Migrate through a CDK trigger; here we invoke the same
        # function once, through its worker, before any traffic.
        result = self.invoker("migrate").invoke({"RequestType": "Create"})
        if result.errored:
            raise RuntimeError(f"Migrate failed: {result.payload}")
        announce(
            self.say,
            "migrate-invoked-once",
            f"migrations applied by invoking Migrate once (AWS: the CDK trigger on deploy): "
            f"{result.json().get('applied')}",
        )
        aws, _ = self._aws()
        with self.db() as conn:
            # The stand-in for rds_iam: the roles Migrate made log in to the proxy with a
            # password (AWS: an IAM token). Set after Migrate, which creates them as in AWS.
            for user in aws.proxy_logins:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(user), sql.Literal(self._app_password)
                    )
                )
            _seed_inventory(conn, self.catalogue)

    def _start_intake(self) -> None:
        _, resources = self._aws()
        (mapping,) = self.template.event_source_mappings()
        queue = self.template.queue(mapping.queue_logical_id)
        fn = resources.functions[mapping.function_logical_id]
        self.poller = SqsEventSourcePoller.from_template(
            mapping,
            queue_visibility_s=queue.visibility_timeout_s,
            endpoint_url=resources.endpoint_url,
            region=resources.region,
            queue_url=resources.queue_urls[mapping.queue_logical_id],
            queue_arn=resources.queue_arns[mapping.queue_logical_id],
            invoker=CountingInvoker(fn.logical_id, self.pools[fn.logical_id], self.counter),
            invoked_function_arn=fn.alias_arn,
            mapping_uuid=resources.event_source_mappings.get(mapping.logical_id),
            say=self.say,
        )
        self.poller.start()

    def _start_gateway(self, port: int = 0) -> None:
        _, resources = self._aws()
        self.gateway = LocalApiGateway(
            self.template,
            invokers={lid: self.pools[lid] for lid in self.pools},
            invoked_arns={lid: fn.alias_arn for lid, fn in resources.functions.items()},
            user_pool_id=resources.user_pool_id,
            app_client_ids=[resources.user_pool_client_id or ""],
            port=port,
            say=self.say,
        )
        self.gateway.start()

    def _message_move_tasks(self) -> AbstractContextManager[object]:
        """DLQ redrive (SQS message move tasks), which moto lacks, served in this process."""
        aws, _ = self._aws()
        announce(
            self.say,
            "sqs-message-move-tasks",
            "SQS StartMessageMoveTask / ListMessageMoveTasks / CancelMessageMoveTask served by "
            "the local stack (moto has none): a DLQ's messages go back to its one source queue",
        )
        return sqs_move_tasks.served(lambda: aws.client("sqs"))

    def _proxy_pool_size(self) -> int:
        """The proxy's share of the local server's connections, as the template sizes RDS
        Proxy's (MaxConnectionsPercent of max_connections); 100 is LocalPostgres' default."""
        percent = 50
        for target in self.template.resources("AWS::RDS::DBProxyTargetGroup"):
            info = target.properties.get("ConnectionPoolConfigurationInfo", {})
            percent = int(info.get("MaxConnectionsPercent", percent))
        return max(2, DEFAULT_MAX_CONNECTIONS * percent // 100)

    # helpers for the demo, serve mode and tests

    @property
    def api_url(self) -> str:
        if self.gateway is None:
            raise RuntimeError("the local stack is not running")
        return self.gateway.base_url

    def resource_map(self) -> LocalStackMap:
        """What ``orders-ops`` and ``python -m devstack token`` need to reach this running stack
        (ops/local_map.py): endpoints, credentials, and the template's outputs as they resolve
        here, under their CloudFormation output keys."""
        aws, resources = self._aws()
        api_url = self.api_url
        outputs: dict[str, str] = {}
        for key, output in self.template.body.get("Outputs", {}).items():
            value = output.get("Value")
            if ".execute-api." in json.dumps(value):
                outputs[key] = f"{api_url}/"  # the deployed URL's form, trailing slash included
                continue
            try:
                outputs[key] = aws.resolver.resolve_str(value)
            except TemplateError:
                continue  # a resource the local stack does not create (the alarm topic, ...)
        return LocalStackMap(
            pid=os.getpid(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            stack_name=self.template.stack_name,
            region=resources.region,
            endpoints={DEFAULT_ENDPOINT: aws.endpoint_url, **aws.service_endpoints},
            access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            outputs=outputs,
            api_url=api_url,
            db_dsn=None if self.postgres is None else self.postgres.conninfo(),
        )

    def customer_token(self, username: str) -> str:
        """An Id token of the local pool's user ``username``, created on first use (runs that
        share the stack share their customers)."""
        aws, _ = self._aws()
        if username not in self._tokens:
            self._tokens[username] = aws.create_demo_customer(username)
        return self._tokens[username]

    def send_raw_message(self, body: str) -> None:
        """Put a message straight on the orders queue, as another producer (or a bug) would."""
        _, resources = self._aws()
        self._client("sqs").send_message(QueueUrl=resources.orders_queue_url, MessageBody=body)

    def executions(self) -> list[dict[str, Any]]:
        _, resources = self._aws()
        sfn = self._client("stepfunctions")
        found: list[dict[str, Any]] = []
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=resources.state_machine_arn
        ):
            found.extend(page["executions"])
        return found

    def queue_messages(
        self, queue_url: str | None, timeout_s: float = 60.0
    ) -> list[dict[str, Any]]:
        """Every message currently in a queue, left there and visible again afterwards.

        Each message is received once with a visibility timeout that outlasts the read, then
        made visible again. (Receiving with a 1 s visibility let the head of a long queue come
        back before its tail was reached: a 200-message DLQ read under load returned 185.)
        A message another consumer holds for a moment (the poller's last long poll after a
        pause) is waited for. Raises rather than return part of the queue: a report on a
        partial read would call the rest lost."""
        self._aws()  # raises when not running
        if queue_url is None:
            return []
        sqs = self._client("sqs")
        messages: dict[str, dict[str, Any]] = {}
        handles: list[str] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                batch = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    VisibilityTimeout=int(timeout_s) + 30,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                ).get("Messages", [])
                for message in batch:
                    messages[message["MessageId"]] = message
                    handles.append(message["ReceiptHandle"])
                if not batch and self._holds_all(queue_url, len(messages)):
                    return list(messages.values())
                if not batch:
                    time.sleep(0.05)
            raise TimeoutError(f"{queue_url}: read {len(messages)} messages in {timeout_s} s")
        finally:
            for start in range(0, len(handles), 10):
                sqs.change_message_visibility_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                        for i, h in enumerate(handles[start : start + 10])
                    ],
                )

    def _holds_all(self, queue_url: str, held: int) -> bool:
        """Whether the ``held`` messages this reader has are all the queue has."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attrs = self._client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)[
            "Attributes"
        ]
        return sum(int(attrs.get(n, 0)) for n in names) <= held

    def wait_until_settled(self, timeout_s: float = 120.0) -> bool:
        """Wait until the queue is drained and no execution is running."""
        if self.poller is None:
            raise RuntimeError("the local stack is not running")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            drained = self.poller.drain(timeout=max(0.1, deadline - time.monotonic()))
            running = len(self.running_executions()) if drained else None
            if running == 0:
                # One more look: a running execution may have just been started by the intake.
                time.sleep(_SETTLE_POLL_S)
                if self.poller.drain(timeout=1) and not self.running_executions():
                    return True
            # Soon again near the end; less often while many run (each look lists them).
            near_end = running is not None and running <= _SETTLE_NEAR_END
            time.sleep(_SETTLE_POLL_S if near_end else 4 * _SETTLE_POLL_S)
        return False

    def running_executions(self) -> list[dict[str, Any]]:
        """The executions still RUNNING (filtered by Step Functions: cheap with 10k done)."""
        _, resources = self._aws()
        sfn = self._client("stepfunctions")
        found: list[dict[str, Any]] = []
        for page in sfn.get_paginator("list_executions").paginate(
            stateMachineArn=resources.state_machine_arn, statusFilter="RUNNING"
        ):
            found.extend(page["executions"])
        return found

    def _client(self, service: str) -> Any:
        """One client per service for these helpers (a boto3 client costs ~20 ms to build;
        the chaos run calls them thousands of times). Tests get fresh ones from ``aws.client``
        so a Stubber on theirs never reaches these."""
        aws, _ = self._aws()
        with self._clients_lock:
            if service not in self._clients:
                self._clients[service] = aws.client(service)
            return self._clients[service]

    @contextmanager
    def db(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection as the database owner (reports and seeding only)."""
        if self.postgres is None:
            raise RuntimeError("the local stack is not running")
        with psycopg.connect(self.postgres.conninfo(), autocommit=True) as conn:
            yield conn
