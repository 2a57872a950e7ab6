"""F06 Database connection exhaustion: one connection per execution environment, reused across
invocations and re-established once when broken; reserved concurrency sized against the proxy.

The budget is read from what deploys (the synthesized template); the behaviour is shown on the
full local stack, whose worker processes are execution environments and whose functions reach
PostgreSQL through a pooling proxy (pgbouncer, the RDS Proxy stand-in): the proxy's client list
is sampled during a burst and every connection is attributed to the worker holding its client
socket (Linux ``/proc``), so "one connection per environment" is counted, not assumed; the
proxy's server connections stay within its pool. ``tests/infra/test_stack_hardening.py::test_connection_budget_holds`` checks the
same budget on ``infra/config.py``; these tests check the template agrees with it.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from infra.config import DB_FUNCTIONS, connection_budget
from tests.catalogue.full_stack import (
    BackendSampler,
    Client,
    at_once,
    available,
    charges,
    count,
    db_environments,
    events,
    fresh_sku,
    function_connections,
    invocations_per_environment,
    log_lines,
    order_body,
    order_statuses,
    pool,
    wait_terminal,
)
from tests.catalogue.templates import our_functions, resources
from tests.infra.conftest import Synthesized
from tests.localstack import Running

# PostgreSQL derives max_connections from the class: LEAST(DBInstanceClassMemory / 9531392,
# 5000). Memory per class (GiB) from the RDS instance class table; the config's figure must not
# be above the derived one (it is "rounded down conservatively", infra/config.py).
INSTANCE_CLASS_MEMORY_GIB = {"db.t4g.small": 2, "db.r7g.large": 16}
BURST = 12  # orders posted at once: 6x the Api's environments locally


def template_connection_budget(stack: Synthesized) -> tuple[int, int, dict[str, int]]:
    """(demand, capacity, reserved concurrency per DB function) as the template deploys them."""
    res = resources(stack)
    reserved = {
        name: int(props["ReservedConcurrentExecutions"])
        for name, (_, props) in our_functions(stack).items()
        if "DB_HOST" in props.get("Environment", {}).get("Variables", {})
    }
    provisioned = sum(
        int(props.get("ProvisionedConcurrencyConfig", {}).get("ProvisionedConcurrentExecutions", 0))
        for _, props in res.of_type("AWS::Lambda::Alias")
    )
    connections_per_env = stack.config.db.connections_per_env
    demand = (sum(reserved.values()) + provisioned) * connections_per_env
    ((_, target_group),) = list(res.of_type("AWS::RDS::DBProxyTargetGroup"))
    percent = int(target_group["ConnectionPoolConfigurationInfo"]["MaxConnectionsPercent"])
    ((_, instance),) = list(res.of_type("AWS::RDS::DBInstance"))
    memory_bytes = INSTANCE_CLASS_MEMORY_GIB[instance["DBInstanceClass"]] * 1024**3
    derived_max_connections = min(memory_bytes // 9531392, 5000)
    max_connections = stack.config.db.instance_max_connections
    assert max_connections <= derived_max_connections, (max_connections, derived_max_connections)
    assert instance["DBInstanceClass"] == f"db.{stack.config.db.instance_type}"
    return demand, max_connections * percent // 100, reserved


def test_f06_the_deployed_reserved_concurrency_fits_the_proxys_connection_budget(
    stage_stack: Synthesized,
) -> None:
    """Given the synthesized template (each function's ReservedConcurrentExecutions and DB
    environment, the alias' provisioned concurrency, the proxy target group's
    MaxConnectionsPercent, the instance class), when the worst case of one connection per
    environment is added up, then it fits the proxy's share of max_connections, every function
    that gets DB settings is one the budget counts, and the template agrees with infra/config.py.

    Fails if: a function gains DB_HOST without being in DB_FUNCTIONS (uncounted connections), a
    DB function's reservation or the provisioned concurrency grows past the budget, the proxy's
    MaxConnectionsPercent shrinks or the instance class shrinks without the config following.
    """
    demand, capacity, reserved = template_connection_budget(stage_stack)
    budget = connection_budget(stage_stack.config)

    assert set(reserved) == DB_FUNCTIONS
    assert stage_stack.config.db.connections_per_env == 1
    assert demand <= capacity, (demand, capacity)
    assert (demand, capacity) == (budget.demand, budget.capacity)


def post_burst(running: Running, sku: str, orders: int) -> list[str]:
    client = Client(running, size=orders)
    tokens = [running.alice if i % 2 else running.bob for i in range(orders)]
    keys = [f"f06-{uuid.uuid4().hex}" for _ in range(orders)]
    answers: list[Any] = at_once(
        [
            partial(client.post, token, order_body((sku, 1)), key)
            for token, key in zip(tokens, keys, strict=True)
        ]
    )
    assert [status for status, _ in answers] == [202] * orders, answers
    return [body["order_id"] for _, body in answers]


def assert_done_exactly_once(running: Running, order_ids: list[str], sku: str, stock: int) -> None:
    with running.stack.db() as conn:
        statuses = wait_terminal(conn, order_ids)
        assert set(statuses.values()) == {"CONFIRMED"}, statuses
        assert available(conn, sku) == stock - len(order_ids)
        for order_id in order_ids:
            history = events(conn, order_id)
            assert (history["RESERVED"], history["PAID"], history["CONFIRMED"]) == (1, 1, 1)
            assert (
                count(conn, "SELECT count(*) FROM reservations WHERE order_id = %s", order_id) == 1
            )
    assert [charges(running, order_id) for order_id in order_ids] == [1] * len(order_ids)


def test_f06_a_burst_uses_one_reused_connection_per_environment(running: Running) -> None:
    """Given the warm stack (two environments per function, each with its connection), when
    12 orders are posted at once (6 per Api environment, and as many sagas queue for the two
    environments of each step) and the proxy's clients are sampled throughout, then the
    functions' connections never outnumber their live environments, each environment held
    exactly one connection for the whole burst while it served many invocations, every
    connection belongs to an environment (none leaked), and the proxy never opened more server
    connections than its pool holds.

    Fails if: `@cache` is dropped from adapters/database.database() or Database stops keeping
    `_conn` (a connection per invocation: several backends per environment, or a pile-up),
    or a connection is opened at module level per import path.
    """
    stack = running.stack
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=100)
    served_before = invocations_per_environment(stack)

    with BackendSampler(stack).running() as sampler:
        order_ids = post_burst(running, sku, BURST)
        assert_done_exactly_once(running, order_ids, sku, stock=100)

    served_during = {
        pid: served - served_before.get(pid, 0)
        for pid, served in invocations_per_environment(stack).items()
    }
    per_env = sampler.backends_per_environment()
    assert sampler.samples, "the sampler took no sample"
    assert pool(stack, "api").size < BURST  # more concurrent requests than environments
    assert all(len(s.backends) <= s.environments for s in sampler.samples)
    assert max(len(s.backends) for s in sampler.samples) <= len(db_environments(stack))
    assert sampler.unowned() == set()
    assert {env: len(backends) for env, backends in per_env.items()} == dict.fromkeys(per_env, 1)
    assert sum(served_during.values()) >= 4 * BURST  # per order: the POST and three steps
    busy = {pid for pid, served in served_during.items() if served >= 2}
    assert busy <= set(per_env), "an environment served twice without a connection sampled"
    assert stack.proxy is not None
    assert max(s.servers for s in sampler.samples) <= stack.proxy.pool_size


def test_f06_a_broken_connection_is_reopened_once_and_the_work_done_once(
    running: Running,
) -> None:
    """Given a burst of 12 orders in flight, when every function connection is dropped at the
    proxy (as an RDS Proxy failover does) while sagas are half way, then every order still
    confirms with one reservation, one charge and the stock taken once, and each environment
    opened exactly one new connection (two in total at most: the dropped one and its
    replacement), logging one reconnect.

    Fails if: Database.run stops reconnecting (steps fail and orders compensate), reconnects
    per statement or in a loop (more than one new backend per environment), or reruns work
    that already committed (a second RESERVED event or charge).
    """
    stack = running.stack
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=100)
    reconnects_before = len(log_lines(running, message="database connection broke; reconnecting"))

    with BackendSampler(stack).running() as sampler:
        order_ids = post_burst(running, sku, BURST)
        with stack.db() as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # mid-burst: some reserved, none finished yet
                statuses = order_statuses(conn, order_ids).values()
                if any(s in {"RESERVED", "PAID", "CONFIRMED"} for s in statuses):
                    break
                time.sleep(0.02)
            proxy = stack.proxy
            assert proxy is not None
            killed = function_connections(stack)
            proxy.drop_client_connections()
            unfinished = [s for s in order_statuses(conn, order_ids).values() if s != "CONFIRMED"]
        assert_done_exactly_once(running, order_ids, sku, stock=100)

    killed_pids = {int(str(c["port"])) for c in killed}
    per_env = sampler.backends_per_environment()
    old_and_new = {
        env: (
            len({pid for pid, _ in backends if pid in killed_pids}),
            len({pid for pid, _ in backends if pid not in killed_pids}),
        )
        for env, backends in per_env.items()
    }
    reconnected = [env for env, (old, new) in old_and_new.items() if old and new]
    reconnects = len(log_lines(running, message="database connection broke; reconnecting"))
    assert killed_pids, "the backends must die while orders are in flight"
    assert unfinished, "the backends must die while orders are in flight"
    assert sampler.unowned() <= killed_pids  # only a killed backend may outlive its socket
    assert all(old <= 1 and new <= 1 for old, new in old_and_new.values()), old_and_new
    assert reconnected, "no environment served work after the kill"
    assert len(reconnected) <= reconnects - reconnects_before <= len(killed_pids)
