"""Helpers for the catalogue proofs that drive the session's full local stack.

The stack is ``tests/localstack.py``'s ``running`` fixture (API Gateway, the function workers,
the SQS mapping, the synthesized state machine on moto, PostgreSQL, the fake provider). These
helpers only *read* it, or feed it the way a client or a producer would; every count they return
comes from a system of record: rows in PostgreSQL, the provider's ledger, moto's execution
history, the functions' own log lines.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import urllib3
from orders_saga.adapters import orders_repository
from orders_saga.models import Order, OrderAcceptedV2, OrderLine
from psycopg import sql

from devstack.lambda_runtime import FunctionPool, FunctionWorker
from devstack.pgbouncer import show
from devstack.stack import LocalStack
from infra.service import this_service
from tests.localstack import TERMINAL, Running

# The functions' PostgreSQL application_name (orders_saga/adapters/database.py).
APP_NAME = this_service().name


# -- orders -------------------------------------------------------------------------------------


def fresh_sku(conn: psycopg.Connection, *, stock: int, price_cents: int = 500) -> str:
    """A SKU only this test uses, so its stock counts nobody else's orders."""
    sku = f"T-{uuid.uuid4().hex[:12].upper()}"
    conn.execute(
        "INSERT INTO inventory (sku, name, unit_price_cents, available) VALUES (%s, %s, %s, %s)",
        (sku, f"catalogue test {sku}", price_cents, stock),
    )
    return sku


def order_body(*lines: tuple[str, int], payment_method: str = "pm_card_visa") -> dict[str, Any]:
    return {
        "items": [{"sku": sku, "quantity": qty} for sku, qty in lines],
        "payment_method": payment_method,
        "currency": "EUR",
    }


def accepted_message(
    order_id: str, customer_id: str, *lines: tuple[str, int], payment_method: str = "pm_card_visa"
) -> str:
    """The OrderAccepted v2 message a producer puts on the orders queue for one order."""
    order = Order(
        order_id=order_id,
        customer_id=customer_id,
        items=[OrderLine(sku=sku, quantity=qty) for sku, qty in lines],
        payment_method=payment_method,
        currency="EUR",
    )
    return OrderAcceptedV2.for_order(order).model_dump_json()


def send_copies(stack: LocalStack, body: str, copies: int) -> None:
    """``copies`` deliveries of one message, put on the queue in one call (so they arrive together)."""
    aws, resources = stack.aws, stack.resources
    assert aws is not None
    assert resources is not None
    aws.client("sqs").send_message_batch(
        QueueUrl=resources.orders_queue_url,
        Entries=[{"Id": str(i), "MessageBody": body} for i in range(copies)],
    )


class Client:
    """An HTTP client for concurrent requests (the session's ``Api`` keeps one connection)."""

    def __init__(self, running: Running, size: int = 16) -> None:
        self.base_url = running.api.base_url
        self.http = urllib3.PoolManager(
            maxsize=size, retries=False, timeout=urllib3.Timeout(connect=5, read=60)
        )

    def post(self, token: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        response = self.http.request(
            "POST",
            f"{self.base_url}/orders",
            body=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": token,
                "Idempotency-Key": key,
            },
        )
        return response.status, json.loads(response.data or b"{}")


def at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run every call in its own thread, released together by a barrier; results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def wait_terminal(
    conn: psycopg.Connection, order_ids: Sequence[str], timeout_s: float = 90
) -> dict[str, str]:
    """Every order's final status, read from PostgreSQL (the system of record)."""
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = order_statuses(conn, order_ids)
        if len(statuses) == len(order_ids) and set(statuses.values()) <= TERMINAL:
            return statuses
        time.sleep(0.1)
    raise AssertionError(f"orders not terminal after {timeout_s} s: {statuses}")


def order_statuses(conn: psycopg.Connection, order_ids: Sequence[str]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT order_id::text, status FROM orders WHERE order_id = ANY(%s::uuid[])",
        (list(order_ids),),
    ).fetchall()
    return {str(order_id): str(status) for order_id, status in rows}


# -- counts from the systems of record ---------------------------------------------------------


def count(conn: psycopg.Connection, sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def available(conn: psycopg.Connection, sku: str) -> int:
    return count(conn, "SELECT available FROM inventory WHERE sku = %s", sku)


def events(conn: psycopg.Connection, order_id: str) -> Counter[str]:
    """The order's history rows per event (RESERVED, PAID, REFUNDED, ...)."""
    rows = conn.execute(
        "SELECT event FROM order_events WHERE order_id = %s", (order_id,)
    ).fetchall()
    return Counter(str(row[0]) for row in rows)


def reservations(conn: psycopg.Connection, order_id: str) -> int:
    return count(conn, "SELECT count(*) FROM reservations WHERE order_id = %s", order_id)


def charges(running: Running, order_id: str) -> int:
    return len(running.stack.provider.ledger.charges_for(order_id))


def refunds(running: Running, order_id: str) -> int:
    return running.stack.provider.ledger.refund_counts().get(order_id, 0)


def executions_for(running: Running, order_id: str) -> list[dict[str, Any]]:
    return [e for e in running.stack.executions() if e["name"] == f"order-{order_id}"]


def history(running: Running, order_id: str) -> list[dict[str, Any]]:
    """The (single) execution's history events for the order, oldest first."""
    (execution,) = executions_for(running, order_id)
    aws = running.stack.aws
    assert aws is not None
    sfn = aws.client("stepfunctions")
    found: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution["executionArn"]
    ):
        found.extend(page["events"])
    return found


def states_entered(running: Running, order_id: str) -> list[str]:
    """Names of the states the execution entered, in order (a retry does not re-enter)."""
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in history(running, order_id)
        if "stateEnteredEventDetails" in event
    ]


def task_attempts(running: Running, order_id: str) -> Counter[str]:
    """Lambda invocations Step Functions scheduled per state (retries included)."""
    attempts: Counter[str] = Counter()
    current = ""
    for event in history(running, order_id):
        if "stateEnteredEventDetails" in event:
            current = event["stateEnteredEventDetails"]["name"]
        elif event["type"] == "LambdaFunctionScheduled":
            attempts[current] += 1
    return attempts


def invocations(running: Running, order_id: str, handler_module: str) -> int:
    """Invocations of one function for one order, counted by the stack's invoker wrapper."""
    resources = running.stack.resources
    assert resources is not None
    logical_id = resources.function(handler_module).logical_id
    return running.stack.counter.by_order.get(order_id, Counter())[logical_id]


def log_lines(
    running: Running, *, message: str, order_id: str | None = None, function: str | None = None
) -> list[dict[str, Any]]:
    """The functions' structured log lines with this message (and order, and function)."""
    return [
        line
        for line in running.logs.json_lines()
        if line.get("message") == message
        and (order_id is None or line.get("order_id") == order_id)
        and (function is None or function in str(line.get("_function")))
    ]


# -- execution environments and their PostgreSQL connections ----------------------------------


def function_connections(stack: LocalStack) -> list[dict[str, object]]:
    """The functions' client connections at the local proxy (pgbouncer's SHOW CLIENTS)."""
    proxy = stack.proxy
    assert proxy is not None
    return [c for c in proxy.clients() if c["application_name"] == APP_NAME]


def pool(stack: LocalStack, handler_module: str) -> FunctionPool:
    resources = stack.resources
    assert resources is not None
    return stack.pools[resources.function(handler_module).logical_id]


def two_environments(stack: LocalStack, handler_module: str) -> tuple[FunctionWorker, ...]:
    """Two distinct execution environments of one function (started if need be)."""
    function_pool = pool(stack, handler_module)
    function_pool.warm_up(2)
    workers = tuple(function_pool.workers[:2])
    assert len(workers) == 2
    return workers


def db_environments(stack: LocalStack) -> dict[int, str]:
    """Live worker processes of every function that talks to PostgreSQL: pid -> function."""
    resources = stack.resources
    assert resources is not None
    found: dict[int, str] = {}
    for logical_id, fn in resources.functions.items():
        if "DB_HOST" not in fn.config.environment:
            continue
        for worker in stack.pools[logical_id].workers:
            if worker.pid is not None:
                found[worker.pid] = logical_id
    return found


def invocations_per_environment(stack: LocalStack) -> dict[int, int]:
    """Invocations each live DB environment has served so far (pid -> count)."""
    resources = stack.resources
    assert resources is not None
    served: dict[int, int] = {}
    for logical_id, fn in resources.functions.items():
        if "DB_HOST" not in fn.config.environment:
            continue
        for worker in stack.pools[logical_id].workers:
            if worker.pid is not None:
                served[worker.pid] = worker.invocations
    return served


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _client_sockets(server_port: int) -> dict[int, int]:
    """Local TCP port -> socket inode, for every connection to ``server_port`` (Linux /proc)."""
    sockets: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == server_port:
                sockets[local_port] = int(fields[9])
    return sockets


@dataclass(frozen=True)
class Backend:
    """One of the functions' connections, as the local proxy sees it (``SHOW CLIENTS``)."""

    pid: int  # the client's TCP port: unique among live connections (pgbouncer has no pid)
    started: str  # connect_time
    environment: int | None  # the worker process holding the client end, None if none does


@dataclass
class Sample:
    at: float
    backends: list[Backend]
    environments: int  # live DB worker processes at that moment
    servers: int  # the proxy's connections to PostgreSQL at that moment


@dataclass
class BackendSampler:
    """Samples the functions' connections to the local proxy (pgbouncer's ``SHOW CLIENTS``, the
    RDS Proxy stand-in) in the background and attributes each to the execution environment
    (worker process) holding its client socket; also counts the proxy's server connections."""

    stack: LocalStack
    interval_s: float = 0.02
    samples: list[Sample] = field(default_factory=list)
    _owners: dict[tuple[int, str], int | None] = field(default_factory=dict)

    @contextmanager
    def running(self) -> Iterator[BackendSampler]:
        proxy = self.stack.proxy
        assert proxy is not None
        stop = threading.Event()
        errors: list[BaseException] = []

        def loop() -> None:
            try:
                with proxy.admin() as admin:
                    while not stop.is_set():
                        self.sample(admin, proxy.settings.port)
                        stop.wait(self.interval_s)
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=loop, name="backend-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=10)
        if errors:
            raise errors[0]

    def sample(self, admin: psycopg.Connection, proxy_port: int) -> None:
        environments = db_environments(self.stack)
        clients = show(admin, "CLIENTS")
        servers = show(admin, "SERVERS")
        backends = [
            Backend(
                int(str(c["port"])),
                str(c["connect_time"]),
                self._owner(int(str(c["port"])), str(c["connect_time"]), proxy_port, environments),
            )
            for c in clients
            if c["application_name"] == APP_NAME
        ]
        self.samples.append(Sample(time.monotonic(), backends, len(environments), len(servers)))

    def _owner(
        self, client_port: int, started: str, proxy_port: int, environments: dict[int, str]
    ) -> int | None:
        key = (client_port, started)
        if key not in self._owners:
            inode = _client_sockets(proxy_port).get(client_port)
            owner = None
            if inode is not None:
                owner = next(
                    (env for env in environments if inode in _socket_inodes(env)),
                    None,
                )
            self._owners[key] = owner
        return self._owners[key]

    def backends_per_environment(self) -> dict[int, set[tuple[int, str]]]:
        """Every distinct connection (port, start) each environment held in any sample."""
        seen: dict[int, set[tuple[int, str]]] = {}
        for sample in self.samples:
            for backend in sample.backends:
                if backend.environment is not None:
                    seen.setdefault(backend.environment, set()).add((backend.pid, backend.started))
        return seen

    def unowned(self) -> set[int]:
        return {
            backend.pid
            for sample in self.samples
            for backend in sample.backends
            if backend.environment is None
        }


def wait_execution(running: Running, order_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The order's execution once it has ended (SUCCEEDED, FAILED, ...)."""
    deadline = time.monotonic() + timeout_s
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = executions_for(running, order_id)
        if len(found) == 1 and found[0]["status"] != "RUNNING":
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"execution of {order_id} not ended after {timeout_s} s: {found}")


# -- database faults ------------------------------------------------------------------------------

_FAULT_FUNCTION = """
CREATE OR REPLACE FUNCTION catalogue_injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV: the SQLSTATE to raise and the message (tests/catalogue/full_stack.py).
    RAISE EXCEPTION '%', TG_ARGV[1] USING ERRCODE = TG_ARGV[0];
END
$$
"""
QUERY_CANCELED = "57014"  # what a statement_timeout raises: the functions' TransientError (F07)
RAISE_EXCEPTION = "P0001"  # a plain error: a bug or a broken dependency, not transient


@contextmanager
def db_fault(
    stack: LocalStack, *, table: str, before: str, when: sql.Composable, sqlstate: str, message: str
) -> Iterator[None]:
    """A trigger that makes matching writes fail with ``sqlstate`` until the block ends.

    The injection sits in PostgreSQL, under the real handler and the real adapter: the function
    sees exactly the error a timed-out or refused statement gives it.
    """
    name = sql.Identifier(f"catalogue_fault_{uuid.uuid4().hex[:12]}")
    with stack.db() as conn:
        conn.execute(_FAULT_FUNCTION)
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {name} BEFORE {before} ON {table} FOR EACH ROW WHEN ({when})"
                " EXECUTE FUNCTION catalogue_injected_fault({sqlstate}, {message})"
            ).format(
                name=name,
                before=sql.SQL(before),
                table=sql.Identifier(table),
                when=when,
                sqlstate=sql.Literal(sqlstate),
                message=sql.Literal(message),
            )
        )
    try:
        yield
    finally:
        with stack.db() as conn:
            conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {name} ON {table}").format(
                    name=name, table=sql.Identifier(table)
                )
            )


def insert_received_order(running: Running, sku: str, quantity: int) -> Order:
    """An order as the Api records it (RECEIVED, no message, no saga), for steps invoked
    directly in their environments as Step Functions would."""
    order = Order(
        order_id=str(uuid.uuid4()),
        customer_id=running.customer_id(running.alice),
        items=[OrderLine(sku=sku, quantity=quantity)],
        payment_method="pm_card_visa",
        currency="EUR",
    )
    with running.stack.db() as conn, conn.transaction():
        orders_repository.insert_received_order(conn, order)
    return order


def invoke_ok(invoker: FunctionWorker | FunctionPool, event: dict[str, Any]) -> dict[str, Any]:
    result = invoker.invoke(event)
    assert not result.errored, result.payload
    payload: dict[str, Any] = result.json()
    return payload
