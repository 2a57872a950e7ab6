"""``make chaos``: many orders through the local stack with faults injected, then the invariants.

Orders go in through the local API Gateway (JWT, request model, the real Api function) from a
bounded pool of client threads. Faults, each with its own rate flag:

* duplicate delivery: the accepted order's message is sent to the orders queue again, and the
  client re-POSTs with the same ``Idempotency-Key`` (F01);
* poison messages: raw malformed messages straight onto the orders queue (F02, F11);
* payment 5xx, payment timeout and lost payment response: per-request random faults of the fake
  provider (F09, F19): the charge (or refund) happened, the step sees a failure;
* handler crash after its side effect and before its response: for a share of the orders, the
  provider books the charge and then TakePayment's execution environment is SIGKILLed before
  the response reaches it (``CrashAfterCharge``; F01/F09): the retry must wait out the dead
  attempt's idempotency record and replay the charge, never book a second one;
* DB connection drop: a background thread terminates the functions' PostgreSQL backends
  (``application_name`` = the service name) with ``pg_terminate_backend`` at random moments (F06);
* hot SKUs: a few SKUs with little stock that many orders compete for (F10);
* a reused Idempotency-Key: the client POSTs a different order with the key of an accepted
  one (F01: it must get a 4xx, never the other order's 202);
* StartExecution throttled: the local Step Functions answers ``ThrottlingException`` to a
  share of the intake's calls (F02: the failed record must come back, never be deleted);
* undeliverable messages: valid orders straight onto the queue whose saga can never start
  (Step Functions refuses their input): the stand-in for a message the intake cannot process
  (F02: it must reach the DLQ after maxReceiveCount, never loop).

``--without KEY`` switches a containment off for the run (``devstack/ablations.py``); ``make
compare`` runs each one against the hardened stack (``devstack/compare.py``).

The report is read from the system's own records (``devstack.invariants``, shared with
``make demo``): PostgreSQL, the provider's ledger, Step Functions executions, the DLQs and the
invocation counter. Exit status 1 on any violation. It also prints wall time, orders/s and the
CPU the run used, so a figure measured on a busy machine can be judged.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path
from typing import Any, Final, TextIO

import jwt
import psycopg
import urllib3
from moto.core.exceptions import AWSError
from orders_saga.logic.order_identity import (
    execution_name_for,
    order_id_for,
    order_id_of_execution,
)
from orders_saga.models import Order, OrderAcceptedV2, OrderLine

from devstack import ablations, invariants
from devstack.aws import DEFAULT_PAYMENT_API_KEY
from devstack.invariants import TERMINAL, Records
from devstack.lambda_runtime import LogRecord, discard_logs
from devstack.payment_provider import PaymentProvider, _DropConnection
from devstack.stack import LocalStack
from infra.service import this_service

APP_NAME = this_service().name  # the functions' PostgreSQL application_name (adapters/database.py)
REGULAR_SKUS = 8
CUSTOMERS = 8
HOT_SHARE = 0.3  # share of orders with a hot SKU line when --hot-skus > 0
DECLINED_CARD = "pm_card_declined"
IN_PROGRESS_ERROR = "IdempotencyAlreadyInProgressError"  # the saga's recorded error name
CLIENT_ATTEMPTS = 5  # a well-behaved client: bounded retries, same key, backoff with jitter
# The functions an order passes through (handler module names): warmed before the clock starts.
ORDER_PATH = ("api", "intake", *ablations.SAGA_STEPS)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ChaosSettings:
    orders: int = 1000
    seed: int = 1
    concurrency: int = 8
    duplicate_rate: float = 0.05
    poison_rate: float = 0.02
    payment_5xx_rate: float = 0.05
    payment_timeout_rate: float = 0.0
    lost_response_rate: float = 0.05
    crash_after_side_effect_rate: float = 0.01  # share of orders whose TakePayment is killed
    db_drop_rate: float = 0.5  # backend terminations per second while orders are in flight
    declined_rate: float = 0.02
    hot_skus: int = 3
    key_reuse_rate: float = 0.0  # share of orders whose key the client reuses for another body
    start_throttle_rate: float = 0.0  # share of StartExecution calls throttled
    undeliverable_rate: float = 0.0  # valid messages per order whose saga can never start
    # How long a "timeout" holds the provider's answer; default: past the adapter's read
    # timeout. Longer than the function timeout, it is a hung provider (F07).
    payment_timeout_delay_s: float | None = None
    ablations: frozenset[str] = frozenset()  # containments switched off (devstack/ablations.py)
    run_label: str = ""  # makes keys (so order ids) unique when runs share a stack
    # Environments per function, capped by each function's reserved concurrency (dev: 4 for
    # the saga steps). Pools grow only when all environments are busy.
    pool_size: int = 4
    # Give up when no order has settled for this long (stuck, not slow: a 10k run's backlog
    # takes ~10 min to settle after the last POST, so a fixed deadline failed healthy runs).
    settle_timeout_s: float = 300.0
    cdk_out: Path = Path("cdk.out")
    # Powertools Tracer in the workers; off by default here (throughput only, announced).
    tracing: bool = False
    # Every function log line to this file (slower); by default logs are discarded.
    log_file: Path | None = None

    def __post_init__(self) -> None:
        if self.orders < 1 or self.concurrency < 1 or self.pool_size < 1:
            raise ValueError("orders, concurrency and pool size must be >= 1")
        probabilities = (
            self.duplicate_rate,
            self.poison_rate,
            self.payment_5xx_rate,
            self.payment_timeout_rate,
            self.lost_response_rate,
            self.crash_after_side_effect_rate,
            self.declined_rate,
            self.key_reuse_rate,
            self.start_throttle_rate,
            self.undeliverable_rate,
        )
        if not all(0.0 <= p <= 1.0 for p in probabilities):
            raise ValueError("fault rates are probabilities within 0..1")
        if self.db_drop_rate < 0 or self.hot_skus < 0:
            raise ValueError("--db-drop-rate and --hot-skus must be >= 0")

    def enabled_faults(self) -> dict[str, bool]:
        return {
            "duplicate delivery": self.duplicate_rate > 0,
            "poison message": self.poison_rate > 0,
            "payment 5xx": self.payment_5xx_rate > 0,
            "payment timeout": self.payment_timeout_rate > 0,
            "payment lost response": self.lost_response_rate > 0,
            "crash after side effect": self.crash_after_side_effect_rate > 0,
            "db connection drop": self.db_drop_rate > 0,
            "hot sku contention": self.hot_skus > 0,
            "reused idempotency key": self.key_reuse_rate > 0,
            "start execution throttled": self.start_throttle_rate > 0,
            "undeliverable message": self.undeliverable_rate > 0,
        }


def catalogue(settings: ChaosSettings) -> tuple[tuple[str, str, int, int], ...]:
    """Regular SKUs with stock for every order; hot SKUs with about half the demand."""
    regular = tuple(
        (f"SKU-CHAOS-{i:02d}", f"Chaos item {i}", 100 + 37 * i, settings.orders * 4)
        for i in range(REGULAR_SKUS)
    )
    if settings.hot_skus == 0:
        return regular
    demand = settings.orders * HOT_SHARE * 1.5 / settings.hot_skus  # mean quantity 1.5
    stock = max(1, math.floor(demand / 2))
    hot = tuple(
        (f"SKU-HOT-{i}", f"Hot item {i}", 5000 + 100 * i, stock) for i in range(settings.hot_skus)
    )
    return regular + hot


# --------------------------------------------------------------------------- the client


@dataclass
class Planned:
    """One order the client will place, decided up front from the seed."""

    index: int
    customer: int
    key: str
    body: dict[str, Any]
    duplicate: bool
    crash: bool = False  # TakePayment's environment dies after the charge (if it charges)
    reuse: bool = False  # the client reuses this order's key for a different body
    reuse_status: int | None = None  # what the API answered to that reuse
    order_id: str = ""
    http_status: int | None = None
    accepted: bool = False
    client_retries: int = 0
    duplicate_post_same: bool | None = None


def plan(settings: ChaosSettings, rng: random.Random) -> list[Planned]:
    hot = [f"SKU-HOT-{i}" for i in range(settings.hot_skus)]
    planned: list[Planned] = []
    for index in range(settings.orders):
        skus = rng.sample(range(REGULAR_SKUS), rng.randint(1, 3))
        lines = [(f"SKU-CHAOS-{i:02d}", rng.randint(1, 3)) for i in skus]
        if hot and rng.random() < HOT_SHARE:
            lines.append((rng.choice(hot), rng.randint(1, 2)))
        card = DECLINED_CARD if rng.random() < settings.declined_rate else "pm_card_visa"
        body = {
            "items": [{"sku": sku, "quantity": qty} for sku, qty in lines],
            "payment_method": card,
            "currency": rng.choice(["EUR", "EUR", "USD", "GBP"]),
        }
        planned.append(
            Planned(
                index=index,
                customer=rng.randrange(CUSTOMERS),
                key=(
                    f"chaos-{settings.run_label}{settings.seed}-{index}-"
                    f"{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
                ),
                body=body,
                duplicate=rng.random() < settings.duplicate_rate,
                crash=rng.random() < settings.crash_after_side_effect_rate,
            )
        )
    # Own dice, so adding this fault left the plans of earlier seeds as they were.
    reuse_rng = random.Random(f"reuse-{settings.seed}")  # noqa: S311
    for p in planned:
        p.reuse = reuse_rng.random() < settings.key_reuse_rate
    return planned


class Client:
    """HTTP client of the local API: bounded retries with the same key, full-jitter backoff."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        self.base_url = base_url
        self.http = urllib3.PoolManager(
            maxsize=concurrency + 2,
            retries=False,
            timeout=urllib3.Timeout(connect=2, read=30),
        )

    def post(self, token: str, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], int]:
        """(status, response, retries): retries only on 429/5xx/connection errors."""
        status, response = 0, {}
        for attempt in range(CLIENT_ATTEMPTS):
            try:
                raw = self.http.request(
                    "POST",
                    f"{self.base_url}/orders",
                    body=json.dumps(body).encode(),
                    headers={
                        "Authorization": token,
                        "Idempotency-Key": key,
                        "Content-Type": "application/json",
                    },
                )
                status = raw.status
                try:
                    response = json.loads(raw.data or b"{}")
                except ValueError:
                    response = {}
            except urllib3.exceptions.HTTPError:
                status, response = 0, {}
            if status not in {0, 429} and status < 500:
                return status, response, attempt
            time.sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))  # noqa: S311
        return status, response, CLIENT_ATTEMPTS - 1


# --------------------------------------------------------------------------- faults


POISON_KINDS = (
    "truncated json",
    "not json",
    "wrong types",
    "unknown schema version",
    "invalid quantity",
)


def poison_body(kind: str, marker: str) -> str:
    if kind == "truncated json":
        return f'{{"schema_version": "2", "order_id": "{marker}", "items": ['
    if kind == "not json":
        return f"{marker}: this is not an order"
    if kind == "wrong types":
        return json.dumps({"schema_version": "2", "order_id": 42, "items": "x", "note": marker})
    if kind == "unknown schema version":
        return json.dumps({"schema_version": "99", "order_id": marker, "items": []})
    return json.dumps(
        {
            "schema_version": "2",
            "order_id": marker,
            "customer_id": "chaos",
            "items": [{"sku": "SKU-CHAOS-00", "quantity": -1}],
            "payment_method": "pm_card_visa",
            "currency": "EUR",
            "accepted_at": "2020-01-01T00:00:00+00:00",
        }
    )


def other_order(body: dict[str, Any]) -> dict[str, Any]:
    """The same order with one more unit of its first line: what a client sends when it
    reuses an Idempotency-Key for a different order."""
    items = [dict(line) for line in body["items"]]
    items[0]["quantity"] = int(items[0]["quantity"]) + 1
    return {**body, "items": items}


UNDELIVERABLE = "chaos-undeliverable-"  # customer id prefix the local Step Functions refuses


def undeliverable_body(marker: str, body: dict[str, Any]) -> str:
    """A valid order message (it passes the intake's validation) whose saga cannot start."""
    order = Order(
        order_id=str(uuid.uuid5(uuid.NAMESPACE_URL, marker)),
        customer_id=marker,
        items=[OrderLine(**line) for line in body["items"]],
        payment_method=body["payment_method"],
        currency=body["currency"],
    )
    return OrderAcceptedV2.for_order(order).model_dump_json()


class _Throttled(AWSError):
    TYPE = "ThrottlingException"
    STATUS = 400


@contextmanager
def start_execution_faults(rate: float, seed: int) -> Iterator[Counter[str]]:
    """The local Step Functions (moto, in this process) answers ``ThrottlingException`` to a
    share of StartExecution calls, and ``InvalidExecutionInput`` to every undeliverable order.
    Yields the counts of both."""
    from moto.stepfunctions.exceptions import InvalidExecutionInput
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    counts: Counter[str] = Counter()
    dice = random.Random(f"start-{seed}")  # noqa: S311
    lock = threading.Lock()
    original = StepFunctionsParserBackend.start_execution

    def start_execution(
        self: Any,
        state_machine_arn: str,
        name: Any = None,
        execution_input: Any = None,
        trace_header: Any = None,
    ) -> Any:
        if UNDELIVERABLE in str(execution_input or ""):
            with lock:
                counts["undeliverable"] += 1
            raise InvalidExecutionInput("the local stack refuses this order (undeliverable)")
        with lock:
            throttled = dice.random() < rate
            counts["throttled"] += throttled
        if throttled:
            raise _Throttled("Rate exceeded")
        return original(self, state_machine_arn, name, execution_input, trace_header)

    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        StepFunctionsParserBackend.start_execution = original  # type: ignore[method-assign]


class DbDropper:
    """Terminates the functions' database backends at Poisson-random moments."""

    def __init__(self, conninfo: str, rate_per_s: float, seed: int) -> None:
        self.conninfo = conninfo
        self.rate = rate_per_s
        self.rng = random.Random(seed)  # noqa: S311
        self.terminated = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-db-drop", daemon=True)

    def start(self) -> None:
        if self.rate > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.wait(self.rng.expovariate(self.rate)):
                try:
                    pids = [
                        int(row[0])
                        for row in conn.execute(
                            "SELECT pid FROM pg_stat_activity"
                            " WHERE application_name = %s AND pid <> pg_backend_pid()",
                            (APP_NAME,),
                        ).fetchall()
                    ]
                    if not pids:
                        continue
                    pid = self.rng.choice(pids)
                    row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
                    if row and row[0]:
                        self.terminated += 1
                except psycopg.Error:
                    self.errors += 1


class HookedProvider(PaymentProvider):
    """The fake provider plus one hook: ``on_charge(reference)`` runs after a new charge is
    booked and before its response is written. When the hook returns True (it killed the
    caller) nothing is written, as for a lost response."""

    def __init__(self, *, api_key: str = DEFAULT_PAYMENT_API_KEY) -> None:
        super().__init__(api_key=api_key)
        self.on_charge: Callable[[str], bool] | None = None

    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Message,
        raw: bytes,
    ) -> tuple[int, dict[str, Any], bool]:
        status, body, replayed = super()._api(method, path, query, headers, raw)
        hook = self.on_charge
        booked = (method, path, status, replayed) == ("POST", "/v1/charges", 201, False)
        if hook is not None and booked and hook(str(body.get("reference", ""))):
            raise _DropConnection
        return status, body, replayed


class CrashAfterCharge:
    """The "handler crash after its side effect, before its response" fault (F01/F09).

    For each chosen order, the first time the provider books its charge, the TakePayment
    environment handling that order is SIGKILLed (its ``current_event`` names the order). The
    charge stays; Lambda reports ``Runtime.ExitError``; Step Functions retries, and the retry
    must outlast the dead attempt's idempotency record and replay the charge by its key.
    """

    def __init__(self, stack: LocalStack, order_ids: set[str]) -> None:
        if stack.resources is None:
            raise RuntimeError("the local stack is not running")
        self.pool = stack.pools[stack.resources.function("take_payment").logical_id]
        self._pending = set(order_ids)
        self._lock = threading.Lock()
        self.crashed: list[str] = []

    def on_charge(self, reference: str) -> bool:
        with self._lock:
            if reference not in self._pending:
                return False
            self._pending.discard(reference)
        killed = False
        for worker in self.pool.workers:
            event = worker.current_event
            order = event.get("order") if isinstance(event, dict) else None
            pid = worker.pid
            if isinstance(order, dict) and order.get("order_id") == reference and pid:
                os.kill(pid, signal.SIGKILL)
                killed = True
        if killed:
            with self._lock:
                self.crashed.append(reference)
        return killed


# --------------------------------------------------------------------------- progress


class Progress:
    """One updating stderr line (no dependency): submitted, settled, elapsed."""

    def __init__(self, total: int, stream: TextIO, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.submitted = 0
        self.settled = 0
        self.phase = "submitting"
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._last = 0.0
        # A terminal gets one line redrawn in place; a log (CI) a new line every 5 s.
        self._tty = stream.isatty()
        self._every = 0.2 if self._tty else 5.0

    def add_submitted(self) -> None:
        with self._lock:
            self.submitted += 1
        self.draw()

    def draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last < (0.05 if force and self._tty else self._every):
                return
            self._last = now
            done = self.settled / self.total if self.total else 1.0
            width = 30
            prefix = "\r" if self._tty else ""
            bar = "#" * int(done * width) + "-" * (width - int(done * width))
            line = (
                f"{prefix}chaos [{bar}] {self.settled}/{self.total} settled,"
                f" {self.submitted} submitted, {now - self.started:6.1f} s ({self.phase})"
            )
        self.stream.write(line if self._tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self._last = 0.0
            self.draw(force=True)
            if self._tty:
                self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------- report


@dataclass
class ChaosReport:
    settings: ChaosSettings
    counts: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    attempts_p50: float = 0.0
    attempts_p99: float = 0.0
    attempts_max: int = 0
    attempts_worst_case: int = 0
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    # CPU seconds between the clock's start and the settled stack (no start-up, no warm-up).
    run_cpu_s: dict[str, float] = field(default_factory=dict)
    settled: bool = True
    # Where the unsettled orders were (unsettled_state), when there are any.
    unsettled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.settled and not any(self.violations.values())

    @property
    def orders_per_s(self) -> float:
        return self.counts.get("submitted", 0) / self.wall_s if self.wall_s else 0.0

    def render(self) -> str:
        out = [""]
        if self.settings.ablations:
            out.append("containments switched off: " + ", ".join(sorted(self.settings.ablations)))
        out.append("orders:")
        out += [f"  {name:<36} {value}" for name, value in self.counts.items()]
        out.append("in DLQ, by reason:")
        out += [f"  {reason[:70]:<70} {n}" for reason, n in sorted(self.dlq_reasons.items())]
        if not self.dlq_reasons:
            out.append("  (none)")
        out.append("faults injected:")
        out += [f"  {name:<36} {value}" for name, value in self.injected.items()]
        out.append(
            f"attempts per order (saga step invocations): p50 {self.attempts_p50:g},"
            f" p99 {self.attempts_p99:g}, max {self.attempts_max}"
            f" (documented worst case {self.attempts_worst_case})"
        )
        out.append("invariants (all must be 0):")
        out += [f"  {name:<36} {value}" for name, value in self.violations.items()]
        for name, ids in self.examples.items():
            if ids and self.violations.get(name):
                out.append(f"  e.g. {name}: {', '.join(ids[:5])}")
        if not self.settled:
            out.append(
                "the stack did not settle: no order settled for"
                f" {self.settings.settle_timeout_s:g} s"
            )
        if self.unsettled:
            out.append("where the unsettled orders are:")
            out += [f"  {line}" for line in self.unsettled]
        out.append(
            f"{self.counts.get('submitted', 0)} orders in {self.wall_s:.1f} s"
            f" ({self.orders_per_s:.1f} orders/s)"
        )
        if self.cpu_s:
            parts = ", ".join(f"{name} {value:.0f} s" for name, value in self.cpu_s.items())
            out.append(f"CPU used (whole process tree, incl. start-up): {parts}")
        if self.run_cpu_s:
            parts = ", ".join(f"{name} {value:.1f} s" for name, value in self.run_cpu_s.items())
            out.append(f"CPU used while the clock ran: {parts}")
            if submitted := self.counts.get("submitted", 0):
                stack = sum(v for k, v in self.run_cpu_s.items() if k != POSTGRES_CPU)
                out.append(
                    f"CPU per order while the clock ran: {stack / submitted:.3f} CPU-s"
                    f" (+ {self.run_cpu_s.get(POSTGRES_CPU, 0.0) / submitted:.3f} PostgreSQL)"
                )
        out.append("RESULT: all invariants hold" if self.ok else "RESULT: FAILED")
        return "\n".join(out)


def unsettled_state(stack: LocalStack, stuck: list[str], limit: int = 10) -> list[str]:
    """Where the orders short of a final state are: the orders queue, the poller, the
    function pools and, for a few stuck orders, their row, events, queued messages and
    execution history. Diagnostics only: a failure to read one part becomes a line, and
    reading the queue counts as a receive of each message."""
    lines: list[str] = []
    for part in (_queue_state, _pool_state, _stuck_orders_state):
        try:
            lines += part(stack, stuck[:limit])
        except Exception as exc:  # noqa: BLE001 - report what could be read
            lines.append(f"{part.__name__}: could not read: {exc!r}")
    return lines


def _queue_state(stack: LocalStack, _: list[str]) -> list[str]:
    res, poller, aws = stack.resources, stack.poller, stack.aws
    if res is None or poller is None or aws is None:
        return ["the stack is not running"]
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=res.orders_queue_url, AttributeNames=["All"]
    )["Attributes"]
    counts = {
        k.removeprefix("ApproximateNumberOfMessages") or "Visible": v
        for k, v in attrs.items()
        if k.startswith("ApproximateNumberOfMessages")
    }
    stats = poller.stats
    return [
        f"orders queue: {counts}",
        f"poller: enabled {poller.enabled}, batches in flight {poller.in_flight},"
        f" invocations {stats.invocations}, function errors {stats.function_errors},"
        f" records ok {stats.records_succeeded}, records failed {stats.records_failed}",
        f"executions running: {len(stack.running_executions())}",
    ]


def _pool_state(stack: LocalStack, _: list[str]) -> list[str]:
    lines = []
    for logical_id, pool in stack.pools.items():
        workers = pool.workers
        lines.append(
            f"pool {logical_id}: {len(workers)}/{pool.size} environments, idle {pool.idle},"
            f" invocations {sum(w.invocations for w in workers)},"
            f" timeouts {sum(w.timeouts for w in workers)},"
            f" crashes {sum(w.crashes for w in workers)}"
        )
    return lines


def _stuck_orders_state(stack: LocalStack, stuck: list[str]) -> list[str]:
    res, aws = stack.resources, stack.aws
    if res is None or aws is None or res.state_machine_arn is None:
        return []
    lines = []
    queued = stack.queue_messages(res.orders_queue_url, timeout_s=20)
    sfn = aws.client("stepfunctions")
    arn_prefix = res.state_machine_arn.replace(":stateMachine:", ":execution:")
    with stack.db() as conn:
        for order_id in stuck:
            row = conn.execute(
                "SELECT status, updated_at FROM orders WHERE order_id = %s", (order_id,)
            ).fetchone()
            events = [
                f"{e[0]} {e[1]:%H:%M:%S}"
                for e in conn.execute(
                    "SELECT event, at FROM order_events WHERE order_id = %s ORDER BY event_id",
                    (order_id,),
                )
            ]
            naming = [m for m in queued if order_id in str(m.get("Body", ""))]
            receives = [m.get("Attributes", {}).get("ApproximateReceiveCount") for m in naming]
            lines.append(
                f"{order_id}: row {(row[0], f'{row[1]:%H:%M:%S}') if row else None},"
                f" events {events}, {len(naming)} message(s) in the orders queue"
                f" (receive counts {receives})"
            )
            lines.append(f"  intake idempotency record: {_intake_record(stack, order_id)}")
            execution_arn = f"{arn_prefix}:{execution_name_for(order_id)}"
            try:
                history = sfn.get_execution_history(executionArn=execution_arn)["events"]
            except sfn.exceptions.ExecutionDoesNotExist:
                lines.append("  no execution")
                continue
            for e in history[-6:]:  # moto ignores maxResults/reverseOrder
                details = json.dumps(
                    {k: v for k, v in e.items() if k.endswith("Details")}, default=str
                )
                lines.append(f"  {e['timestamp']:%H:%M:%S} {e['type']} {details[:140]}")
    return lines


def _intake_record(stack: LocalStack, order_id: str) -> str:
    """The intake's Powertools record for an order: key ``start_saga#md5(json(order id))``."""
    res, aws = stack.resources, stack.aws
    if res is None or aws is None or res.idempotency_table is None:
        return "no table"
    digest = hashlib.md5(json.dumps(order_id).encode(), usedforsecurity=False).hexdigest()
    item = (
        aws.client("dynamodb")
        .get_item(TableName=res.idempotency_table, Key={"id": {"S": f"start_saga#{digest}"}})
        .get("Item")
    )
    if item is None:
        return "none"
    return json.dumps({k: next(iter(v.values())) for k, v in item.items()}, default=str)[:300]


def _order_of(execution_name: str) -> str:
    """The order id in an execution name, also when an ablation added a suffix to it."""
    return order_id_of_execution(execution_name)[:36]


def _timeouts(stack: LocalStack) -> int:
    """Invocations the local Lambda killed at the function timeout so far (all functions)."""
    return sum(w.timeouts for pool in stack.pools.values() for w in pool.workers)


def percentile(values: list[int], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def worst_case_attempts() -> int:
    """Saga step invocations one execution can cause, from the dev stage's retry budget."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from infra.config import saga_step_invocations_worst_case, stage_config

    return saga_step_invocations_worst_case(stage_config("dev"))


def build_report(
    stack: LocalStack,
    settings: ChaosSettings,
    planned: list[Planned],
    poisons: dict[str, str],
    *,
    settled: bool = True,
    timeouts: int = 0,
) -> ChaosReport:
    report = ChaosReport(settings=settings, settled=settled)
    order_ids = {p.order_id for p in planned}
    records = Records.read(stack)
    # Executions of earlier runs on a shared stack (make compare) are not this run's.
    records = replace(
        records,
        executions=[e for e in records.executions if _order_of(str(e["name"])) in order_ids],
    )
    accepted = [p for p in planned if p.accepted]
    accepted_ids = [p.order_id for p in accepted]

    reasons: Counter[str] = Counter()
    poison_found: set[str] = set()
    for queue, messages in records.dead_letters.items():
        for message in messages:
            reasons[f"{queue}: {invariants.failure_reason(message).split(':')[0]}"] += 1
            body = str(message.get("Body", ""))
            poison_found.update(marker for marker in poisons if marker in body)
    report.dlq_reasons = dict(reasons)
    in_dlq = records.in_dead_letters(accepted_ids)

    found = invariants.check(records, accepted_ids)
    status = records.status
    confirmed = [oid for oid in accepted_ids if status.get(oid) == "CONFIRMED"]
    failed = [oid for oid in accepted_ids if status.get(oid) == "FAILED"]
    not_compensated = set(found["failed, not compensated"])
    report.counts = {
        "submitted": len(accepted),
        "rejected by the API (4xx)": sum(
            1 for p in planned if p.http_status and 400 <= p.http_status < 500
        ),
        "client gave up (5xx / no answer)": sum(
            1 for p in planned if not p.accepted and (p.http_status or 0) // 100 != 4
        ),
        "client retries": sum(p.client_retries for p in planned),
        "confirmed": len(confirmed),
        "failed and compensated": sum(1 for oid in failed if oid not in not_compensated),
        "in a DLQ": sum(1 for oid in accepted_ids if oid in in_dlq),
        "not terminal": len(found["not terminal"]),
        "lost (submitted but nowhere)": len(found["lost (submitted but nowhere)"]),
        "saga executions": len(records.executions),
        "payment provider requests": stack.provider.ledger.requests_received,
    }

    execs_per_order = Counter(_order_of(str(e["name"])) for e in records.executions)
    attempts = [stack.counter.attempts(oid) for oid in accepted_ids]
    report.attempts_worst_case = worst_case_attempts()
    report.attempts_p50 = percentile(attempts, 50)
    report.attempts_p99 = percentile(attempts, 99)
    report.attempts_max = max(attempts, default=0)
    # The chaos run's own checks, on top of the invariants every local run checks.
    found |= {
        "charges for unknown orders": sorted(
            {c.reference for c in records.charges if c.reference not in order_ids}
        ),
        "poison not dead-lettered": [m for m in poisons if m not in poison_found],
        "retried POST, different answer": [
            p.order_id for p in planned if p.duplicate_post_same is False
        ],
        "more than one execution": [oid for oid, n in execs_per_order.items() if n > 1],
        # F01: a reused key with another body must be refused, never answered with the
        # first order's 202 (the client would believe its second order was placed).
        "reused key, different body, accepted": [
            p.order_id for p in planned if p.reuse_status is not None and p.reuse_status < 300
        ],
        # F07: a hung dependency held an invocation until the platform killed it.
        "killed at the function timeout": [f"invocation {n + 1}" for n in range(timeouts)],
        # F01/F09: a crashed attempt must not fail its order: the saga steps keep no
        # in-progress record (ADR 0012), so the retry replays the side effect by its key.
        "failed behind a crashed attempt": [
            oid
            for oid in failed
            if records.failure_reason.get(oid, "").startswith(IN_PROGRESS_ERROR)
        ],
        "attempts above worst case": [
            oid
            for oid, n in zip(accepted_ids, attempts, strict=True)
            if n > report.attempts_worst_case
        ],
    }
    report.violations = {name: len(ids) for name, ids in found.items()}
    report.examples = found
    if not settled or found["not terminal"]:
        report.unsettled = unsettled_state(stack, found["not terminal"])
    return report


# --------------------------------------------------------------------------- the run


def _injected(
    planned: list[Planned],
    duplicates: Counter[str],
    poisons: dict[str, str],
    payment: dict[str, int],
    dropper: DbDropper,
    crasher: CrashAfterCharge | None,
    starts: Counter[str],
) -> dict[str, int]:
    def with_sku_prefix(p: Planned) -> bool:
        return any(str(i["sku"]).startswith("SKU-HOT-") for i in p.body["items"])

    return {
        "duplicate delivery (sqs redelivery)": duplicates["sqs redelivery"],
        "duplicate delivery (client re-POST)": duplicates["client re-POST"],
        "poison message": len(poisons),
        "payment 5xx": payment["unavailable"],
        "payment timeout": payment["timeout"],
        "payment lost response": payment["lost_response"],
        "crash after side effect (TakePayment)": len(crasher.crashed) if crasher else 0,
        "db connection drop": dropper.terminated,
        "hot sku contention (orders)": sum(1 for p in planned if with_sku_prefix(p)),
        "declined card (orders)": sum(
            1 for p in planned if p.body["payment_method"] == DECLINED_CARD
        ),
        "reused idempotency key": sum(1 for p in planned if p.reuse_status is not None),
        "start execution throttled": starts["throttled"],
        "undeliverable message": sum(1 for kind in poisons.values() if kind == "undeliverable"),
    }


@contextmanager
def _random_payment_faults(stack: LocalStack, settings: ChaosSettings) -> Iterator[None]:
    from devstack.payment_provider import RandomFaults

    # A "timeout" holds the response past the adapter's read timeout (5 s by default).
    read_timeout_s = float(os.environ.get("PAYMENT_READ_TIMEOUT_S", "5"))
    stack.provider.faults.set_random(
        RandomFaults(
            unavailable_rate=settings.payment_5xx_rate,
            lost_response_rate=settings.lost_response_rate,
            timeout_rate=settings.payment_timeout_rate,
            timeout_delay_ms=int((settings.payment_timeout_delay_s or read_timeout_s + 0.5) * 1000),
            seed=settings.seed,
        )
    )
    try:
        yield
    finally:
        stack.provider.faults.reset()


def warm_up(stack: LocalStack) -> None:
    """Start every environment the order path may use (up to each pool's size) before the
    clock starts, like provisioned concurrency: otherwise the first burst starts them all at
    once, each cold start waiting for CPU behind the others, and the run's first minute
    measures imports. Cold starts after a crash or timeout still happen during the run."""
    if stack.resources is None:
        raise RuntimeError("the local stack is not running")
    resources = stack.resources
    pools = [stack.pools[resources.function(name).logical_id] for name in ORDER_PATH]
    with ThreadPoolExecutor(len(pools), thread_name_prefix="chaos-warm") as ex:
        list(ex.map(lambda pool: pool.warm_up(pool.size), pools))


class _SettledWatcher:
    """Feeds the progress bar: how many of the run's orders reached a terminal state."""

    def __init__(self, stack: LocalStack, order_ids: list[str], progress: Progress) -> None:
        self.stack = stack
        self.order_ids = order_ids
        self.progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with self.stack.db() as conn:
            # The run's order ids once, in a temporary table: the progress query then joins
            # instead of shipping 10k ids every second.
            conn.execute("CREATE TEMPORARY TABLE chaos_orders (order_id uuid PRIMARY KEY)")
            with conn.cursor().copy("COPY chaos_orders (order_id) FROM STDIN") as copy:
                for order_id in self.order_ids:
                    copy.write_row((order_id,))
            while not self._stop.wait(1.0):
                row = conn.execute(
                    "SELECT count(*) FROM orders o JOIN chaos_orders c USING (order_id)"
                    " WHERE o.status = ANY(%s)",
                    (list(TERMINAL),),
                ).fetchone()
                self.progress.settled = int(row[0]) if row else 0
                self.progress.draw(force=True)


class _Placer:
    """Places one planned order from a client thread, with its duplicate and poison faults."""

    def __init__(
        self,
        stack: LocalStack,
        settings: ChaosSettings,
        tokens: list[str],
        customer_ids: list[str],
        progress: Progress,
    ) -> None:
        self.stack = stack
        self.settings = settings
        self.tokens = tokens
        self.customer_ids = customer_ids
        self.progress = progress
        self.client = Client(stack.api_url, settings.concurrency)
        self.lock = threading.Lock()
        self.poisons: dict[str, str] = {}
        self.duplicates: Counter[str] = Counter()

    def place(self, p: Planned) -> None:
        settings = self.settings
        local = random.Random(settings.seed * 1_000_003 + p.index)  # noqa: S311
        token = self.tokens[p.customer]
        status, response, retries = self.client.post(token, p.key, p.body)
        p.http_status, p.client_retries = status, retries
        p.accepted = status == 202
        if p.accepted and response.get("order_id") != p.order_id:
            p.duplicate_post_same = False  # the API must use the business identity
        if p.accepted and p.duplicate:
            self._duplicate(p, token)
        if p.accepted and p.reuse:
            p.reuse_status, _, _ = self.client.post(token, p.key, other_order(p.body))
        if local.random() < settings.poison_rate:
            kind = POISON_KINDS[p.index % len(POISON_KINDS)]
            marker = f"chaos-poison-{settings.run_label}{settings.seed}-{p.index}"
            self.stack.send_raw_message(poison_body(kind, marker))
            with self.lock:
                self.poisons[marker] = kind
        if local.random() < settings.undeliverable_rate:
            marker = f"{UNDELIVERABLE}{settings.run_label}{settings.seed}-{p.index}"
            self.stack.send_raw_message(undeliverable_body(marker, p.body))
            with self.lock:
                self.poisons[marker] = "undeliverable"
        self.progress.add_submitted()

    def _duplicate(self, p: Planned, token: str) -> None:
        """The client retries the POST (same key), and SQS delivers the message again."""
        again, again_body, _ = self.client.post(token, p.key, p.body)
        p.duplicate_post_same = again == 202 and again_body.get("order_id") == p.order_id
        redelivered = OrderAcceptedV2.for_order(
            Order(
                order_id=p.order_id,
                customer_id=self.customer_ids[p.customer],
                items=[OrderLine(**line) for line in p.body["items"]],
                payment_method=p.body["payment_method"],
                currency=p.body["currency"],
            )
        )
        self.stack.send_raw_message(redelivered.model_dump_json())
        with self.lock:
            self.duplicates["sqs redelivery"] += 1
            self.duplicates["client re-POST"] += 1


def run_on(
    stack: LocalStack,
    settings: ChaosSettings,
    *,
    progress_stream: TextIO | None = None,
) -> ChaosReport:
    """Run the chaos against a running stack seeded with ``catalogue(settings)``."""
    rng = random.Random(settings.seed)  # noqa: S311 - reproducible chaos, not cryptography
    planned = plan(settings, rng)
    tokens = [stack.customer_token(f"chaos-{i}@example.com") for i in range(CUSTOMERS)]
    customer_ids = [str(jwt.decode(t, options={"verify_signature": False})["sub"]) for t in tokens]
    for p in planned:
        p.order_id = order_id_for(customer_ids[p.customer], p.key)
    warm_up(stack)
    progress = Progress(settings.orders, progress_stream or sys.stderr, progress_stream is not None)
    if stack.postgres is None:
        raise RuntimeError("the local stack is not running")
    dropper = DbDropper(stack.postgres.conninfo(), settings.db_drop_rate, settings.seed)
    placer = _Placer(stack, settings, tokens, customer_ids, progress)
    place = placer.place
    poisons = placer.poisons
    duplicates_sent = placer.duplicates

    crasher: CrashAfterCharge | None = None
    if settings.crash_after_side_effect_rate > 0:
        if not isinstance(stack.provider, HookedProvider):
            raise RuntimeError("the crash fault needs the stack built with a HookedProvider")
        crasher = CrashAfterCharge(stack, {p.order_id for p in planned if p.crash})

    watcher = _SettledWatcher(stack, [p.order_id for p in planned], progress)
    timeouts_before = _timeouts(stack)
    cpu = _CpuMeter(_postmaster_pid(stack))
    started = time.monotonic()
    settled = False
    if crasher is not None and isinstance(stack.provider, HookedProvider):
        stack.provider.on_charge = crasher.on_charge
    with (
        _random_payment_faults(stack, settings),
        start_execution_faults(settings.start_throttle_rate, settings.seed) as starts,
    ):
        dropper.start()
        watcher.start()
        try:
            with ThreadPoolExecutor(settings.concurrency, thread_name_prefix="chaos-client") as ex:
                list(ex.map(place, planned))
            progress.phase = "settling"
            settled = _wait_settled(stack, progress, settings.settle_timeout_s)
        finally:
            dropper.stop()
            watcher.stop()
            injected_payment = stack.provider.faults.injected()
            if isinstance(stack.provider, HookedProvider):
                stack.provider.on_charge = None
    wall = time.monotonic() - started
    run_cpu = cpu.since_start()
    progress.phase = "report"
    progress.finish()

    report = build_report(
        stack,
        settings,
        planned,
        poisons,
        settled=settled,
        timeouts=_timeouts(stack) - timeouts_before,
    )
    report.wall_s = wall
    report.run_cpu_s = run_cpu
    report.injected = _injected(
        planned, duplicates_sent, poisons, injected_payment, dropper, crasher, starts
    )
    return report


def _wait_settled(stack: LocalStack, progress: Progress, idle_s: float) -> bool:
    """Wait for the stack to settle while orders keep settling; ``False`` once none has for
    ``idle_s`` seconds (``progress.settled`` is the watcher's count of terminal orders)."""
    last, since = progress.settled, time.monotonic()
    # Short waits: the idle clock is checked after each one, so a run that cannot settle gives
    # up idle_s after its last settled order, not up to twice that.
    while not stack.wait_until_settled(timeout_s=min(1.0, idle_s)):
        if progress.settled != last:
            last, since = progress.settled, time.monotonic()
        elif time.monotonic() - since >= idle_s:
            return False
    return True


def run(settings: ChaosSettings, *, progress_stream: TextIO | None = sys.stderr) -> ChaosReport:
    """Start a local stack seeded for the chaos, run it, stop the stack."""

    def say(message: str) -> None:
        if progress_stream is not None:
            print(f"chaos: {message}", file=progress_stream, flush=True)

    cpu_before = _cpu_seconds()
    with LocalStack(
        cdk_out=settings.cdk_out,
        pool_size=settings.pool_size,
        catalogue=catalogue(settings),
        say=say,
        log_sink=discard_logs if settings.log_file is None else _FileSink(settings.log_file),
        provider=HookedProvider(),
        tracing=settings.tracing,
        ablations=settings.ablations,
    ) as stack:
        report = run_on(stack, settings, progress_stream=progress_stream)
    # After the stack stopped, so every worker and the second moto process are accounted for.
    cpu_after = _cpu_seconds()
    report.cpu_s = {
        "this process (moto, Step Functions, API, poller, clients)": cpu_after[0] - cpu_before[0],
        "child processes (Lambda workers, DynamoDB's moto)": cpu_after[1] - cpu_before[1],
    }
    return report


class _FileSink:
    """A log sink appending ``<function> <stream> <line>`` to a file (``--log-file``)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, record: LogRecord) -> None:
        with self._lock:
            self._file.write(f"{record.function_name} {record.stream} {record.line}\n")
            self._file.flush()


PARENT_CPU: Final = "this process"
CHILDREN_CPU: Final = "its children (Lambda workers, DynamoDB's moto)"
POSTGRES_CPU: Final = "PostgreSQL"


class _CpuMeter:
    """CPU seconds used since construction, per part (see ``_run_cpu_seconds``)."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.started = _run_cpu_seconds(postmaster)

    def since_start(self) -> dict[str, float]:
        now = _run_cpu_seconds(self.postmaster)
        return {name: now[name] - self.started.get(name, 0.0) for name in now}


def _run_cpu_seconds(postmaster: int | None) -> dict[str, float]:
    """CPU seconds so far of this process, of its process tree below it (live descendants
    plus the reaped ones, as the kernel accounts them to their parent) and of PostgreSQL's
    tree, read from ``/proc``; ``{}`` where there is no ``/proc``."""
    stats = _proc_stats()
    if not stats:
        return {}
    me = os.getpid()
    own = stats.get(me)
    out = {
        PARENT_CPU: own[1] if own else 0.0,
        CHILDREN_CPU: _tree_cpu(stats, me) - (own[1] if own else 0.0),
    }
    if postmaster is not None and postmaster in stats:
        out[POSTGRES_CPU] = _tree_cpu(stats, postmaster)
    return out


def _proc_stats() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, own user+system CPU s, reaped children's user+system CPU s)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[int, float, float]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue  # exited meanwhile
            fields = raw[raw.rfind(b")") + 2 :].split()
            # fields[0] is the state (field 3 of proc(5)): ppid 4, utime 14 ... cstime 17
            ppid = int(fields[1])
            own = (int(fields[11]) + int(fields[12])) / ticks
            reaped = (int(fields[13]) + int(fields[14])) / ticks
            out[int(entry.name)] = (ppid, own, reaped)
    return out


def _tree_cpu(stats: dict[int, tuple[int, float, float]], root: int) -> float:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            _, own, reaped = stats[pid]
            total += own + reaped
        todo.extend(children.get(pid, ()))
    return total


def _postmaster_pid(stack: LocalStack) -> int | None:
    """PostgreSQL's postmaster (its CPU is reported apart); None if it cannot be read."""
    try:
        with stack.db() as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        text = (Path(str(row[0])) / "postmaster.pid").read_text() if row else ""
        return int(text.split()[0])
    except (psycopg.Error, OSError, ValueError, IndexError):
        return None


def _cpu_seconds() -> tuple[float, float]:
    """(this process, reaped children) user + system CPU seconds; PostgreSQL runs detached."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ChaosSettings()
    a = parser.add_argument
    a("--orders", type=int, default=d.orders, help="orders to place (default %(default)s)")
    a("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    a("--concurrency", type=int, default=d.concurrency, help="client threads (%(default)s)")
    a(
        "--duplicate-rate",
        type=float,
        default=d.duplicate_rate,
        help="share of orders delivered twice",
    )
    a("--poison-rate", type=float, default=d.poison_rate, help="poison messages per order")
    a("--payment-5xx-rate", type=float, default=d.payment_5xx_rate, help="per provider request")
    a(
        "--payment-timeout-rate",
        type=float,
        default=d.payment_timeout_rate,
        help="per charge/refund; each costs the adapter's read timeout (5 s) of a worker",
    )
    a(
        "--lost-response-rate",
        type=float,
        default=d.lost_response_rate,
        help="per charge/refund: processed, then the connection closes without a response",
    )
    a(
        "--crash-after-side-effect-rate",
        type=float,
        default=d.crash_after_side_effect_rate,
        help="share of orders whose TakePayment environment is SIGKILLed after the charge",
    )
    a("--db-drop-rate", type=float, default=d.db_drop_rate, help="backend kills per second")
    a("--declined-rate", type=float, default=d.declined_rate, help="share of declined cards")
    a("--hot-skus", type=int, default=d.hot_skus, help="SKUs with scarce stock (contention)")
    a("--pool-size", type=int, default=d.pool_size, help="workers per function (%(default)s)")
    a(
        "--settle-timeout",
        type=float,
        default=d.settle_timeout_s,
        help="give up when no order settles for this many seconds",
    )
    a(
        "--tracing",
        action="store_true",
        help="run the functions with Powertools Tracer on (off by default: throughput only)",
    )
    a("--key-reuse-rate", type=float, default=d.key_reuse_rate, help="keys reused, new body")
    a(
        "--start-throttle-rate",
        type=float,
        default=d.start_throttle_rate,
        help="share of StartExecution calls answered ThrottlingException",
    )
    a(
        "--undeliverable-rate",
        type=float,
        default=d.undeliverable_rate,
        help="valid messages per order whose saga can never start",
    )
    a(
        "--payment-timeout-delay",
        type=float,
        help="seconds a payment timeout holds the answer (default: read timeout + 0.5 s)",
    )
    a(
        "--without",
        action="append",
        default=[],
        metavar="KEY",
        help="switch a containment off, e.g. F09-provider-idempotency-key, or `all`"
        " (repeatable; the keys: `make compare` or devstack/ablations.py)",
    )
    a("--log-file", type=Path, help="write every function log line here (slower)")
    a("--quiet", action="store_true", help="no progress line")


def main(args: argparse.Namespace) -> int:
    settings = ChaosSettings(
        orders=args.orders,
        seed=args.seed,
        concurrency=args.concurrency,
        duplicate_rate=args.duplicate_rate,
        poison_rate=args.poison_rate,
        payment_5xx_rate=args.payment_5xx_rate,
        payment_timeout_rate=args.payment_timeout_rate,
        lost_response_rate=args.lost_response_rate,
        crash_after_side_effect_rate=args.crash_after_side_effect_rate,
        db_drop_rate=args.db_drop_rate,
        declined_rate=args.declined_rate,
        hot_skus=args.hot_skus,
        pool_size=args.pool_size,
        settle_timeout_s=args.settle_timeout,
        tracing=args.tracing,
        log_file=args.log_file,
        key_reuse_rate=args.key_reuse_rate,
        start_throttle_rate=args.start_throttle_rate,
        undeliverable_rate=args.undeliverable_rate,
        payment_timeout_delay_s=args.payment_timeout_delay,
        ablations=ablations.parse(args.without),
    )
    report = run(settings, progress_stream=None if args.quiet else sys.stderr)
    print(report.render(), flush=True)
    return 0 if report.ok else 1


__all__ = ["ChaosReport", "ChaosSettings", "add_arguments", "catalogue", "main", "run", "run_on"]
