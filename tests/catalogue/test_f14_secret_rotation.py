"""F14 Secrets expire or rotate mid-flight: a broken login is retried once with credentials
read afresh, and cached secrets are re-read after their max age, without a restart.

Locally the service functions log in to the local proxy (pgbouncer, devstack/pgbouncer.py)
with a password from Secrets Manager (moto), the stand-in for RDS Proxy's IAM token
(devstack/aws.py ``local_overrides``: ``DB_AUTH=secret``); the proxy checks it against
PostgreSQL at every login, so a rotated password takes effect at once, as an expired token
does. Both paths go through ``Database.run``'s one reconnect with ``refresh=True``
(adapters/database.py).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import psycopg
import pytest
from moto.secretsmanager.models import SecretsManagerBackend
from psycopg import sql

from devstack.lambda_runtime import FunctionWorker
from tests.catalogue.full_stack import (
    Client,
    at_once,
    available,
    charges,
    db_environments,
    events,
    fresh_sku,
    function_connections,
    insert_received_order,
    invoke_ok,
    log_lines,
    order_body,
    order_statuses,
    pool,
    wait_terminal,
)
from tests.localstack import Running

ORDERS = 8


@pytest.fixture
def secret_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every GetSecretValue the moto server answers, by secret id (observation only: Secrets
    Manager is served in this process, devstack/aws.py; only DynamoDB runs in a second one)."""
    reads: list[str] = []
    real = SecretsManagerBackend.get_secret_value

    def counting(self: SecretsManagerBackend, secret_id: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(secret_id)
        return real(self, secret_id, *args, **kwargs)

    monkeypatch.setattr(SecretsManagerBackend, "get_secret_value", counting)
    return reads


Rotate = Callable[[psycopg.Connection], str]


@dataclass(frozen=True)
class ProxyLogin:
    user: str
    secret_arn: str


@pytest.fixture
def proxy_login(running: Running) -> ProxyLogin:
    """The login the service functions present to the proxy (their IAM token in AWS)."""
    aws = running.stack.aws
    assert aws is not None
    ((user, arn),) = aws.proxy_logins.items()
    return ProxyLogin(user, arn)


@pytest.fixture
def rotation(running: Running, proxy_login: ProxyLogin) -> Iterator[Rotate]:
    """Rotates the functions' database password (PostgreSQL and Secrets Manager, as a rotation
    Lambda's setSecret + finishSecret do); puts the original back afterwards, the same way."""
    stack = running.stack
    aws = stack.aws
    assert aws is not None
    sm = aws.client("secretsmanager")
    original = sm.get_secret_value(SecretId=proxy_login.secret_arn)["SecretString"]

    def set_password(conn: psycopg.Connection, secret: dict[str, Any]) -> None:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(secret["username"]), sql.Literal(secret["password"])
            )
        )
        sm.put_secret_value(SecretId=proxy_login.secret_arn, SecretString=json.dumps(secret))

    def rotate(conn: psycopg.Connection) -> str:
        rotated = {**json.loads(original), "password": secrets.token_urlsafe(24)}
        set_password(conn, rotated)
        return str(rotated["password"])

    yield rotate
    with stack.db() as conn:
        set_password(conn, json.loads(original))


def test_f14_rotating_the_database_password_mid_flight_fails_no_order(
    running: Running, rotation: Rotate, proxy_login: ProxyLogin, secret_reads: list[str]
) -> None:
    """Given 8 orders whose sagas are running, when the functions' database password is rotated
    (ALTER ROLE and the new value in Secrets Manager) and every client connection is dropped at
    the proxy (as an RDS Proxy failover does), then every order still confirms exactly once
    (one reservation event, one charge, the stock taken once), the old password no longer logs
    in, the functions logged in again with the new one, and the secret was read again, at most
    twice per environment (once per forced refresh), not on every invocation.

    Fails if: Database.run's second attempt stops asking for fresh credentials (`refresh=True`)
    or SecretCredentials ignores it (the cached, rotated-out password fails again and orders
    compensate), or secrets stop being cached (reads on every invocation).
    """
    stack = running.stack
    proxy, aws = stack.proxy, stack.aws
    assert proxy is not None
    assert aws is not None
    sm = aws.client("secretsmanager")
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=100)
    client = Client(running, size=ORDERS)
    answers: list[Any] = at_once(
        [
            lambda: client.post(running.alice, order_body((sku, 1)), f"f14-{uuid.uuid4().hex}")
            for _ in range(ORDERS)
        ]
    )
    order_ids = [body["order_id"] for _, body in answers]
    reconnects_before = len(log_lines(running, message="database connection broke; reconnecting"))

    with stack.db() as admin:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            s in {"RESERVED", "PAID"} for s in order_statuses(admin, order_ids).values()
        ):
            time.sleep(0.02)
        in_flight = [s for s in order_statuses(admin, order_ids).values() if s != "CONFIRMED"]
        reads_before = secret_reads.count(proxy_login.secret_arn)
        old_password = json.loads(
            sm.get_secret_value(SecretId=proxy_login.secret_arn)["SecretString"]
        )["password"]
        rotation(admin)
        dropped = function_connections(stack)
        proxy.drop_client_connections()
        statuses = wait_terminal(admin, order_ids)
        stock = available(admin, sku)
        histories = [events(admin, order_id) for order_id in order_ids]
    # Every client of the proxy now logged in after the drop, so with the rotated password.
    relogged = function_connections(stack)
    reads = secret_reads.count(proxy_login.secret_arn) - reads_before
    reconnects = len(log_lines(running, message="database connection broke; reconnecting"))

    assert [status for status, _ in answers] == [202] * ORDERS
    assert in_flight, "the rotation must hit orders in flight"
    assert dropped, "the functions' connections must be dropped while orders are in flight"
    assert set(statuses.values()) == {"CONFIRMED"}, statuses
    assert all((h["RESERVED"], h["PAID"], h["CONFIRMED"]) == (1, 1, 1) for h in histories)
    assert [charges(running, order_id) for order_id in order_ids] == [1] * ORDERS
    assert stock == 100 - ORDERS
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        psycopg.connect(proxy.conninfo(proxy_login.user, old_password)).close()
    assert relogged, "no function logged in again after the rotation"
    assert reconnects > reconnects_before
    assert 1 <= reads <= 2 * len(db_environments(stack))


# -- the payment provider's API key ---------------------------------------------------------------


@pytest.fixture
def rotate_payment_key(running: Running) -> Iterator[Callable[[], str]]:
    """Rolls the provider's API key and stores the new one in Secrets Manager, as a key
    rotation does; puts the original back afterwards."""
    stack = running.stack
    aws, resources = stack.aws, stack.resources
    assert aws is not None
    assert resources is not None
    assert resources.payment_key_secret_arn
    sm = aws.client("secretsmanager")
    original = stack.provider.api_key

    def rotate() -> str:
        key = f"sk_rotated_{secrets.token_hex(8)}"
        stack.provider.api_key = key
        sm.put_secret_value(SecretId=resources.payment_key_secret_arn, SecretString=key)
        return key

    yield rotate
    stack.provider.api_key = original
    sm.put_secret_value(SecretId=resources.payment_key_secret_arn, SecretString=original)


def test_f14_a_rolled_payment_key_is_re_read_once_and_no_order_fails(
    running: Running, rotate_payment_key: Callable[[], str], secret_reads: list[str]
) -> None:
    """Given TakePayment's environments hold the provider key in their cache, when the key is
    rolled at the provider and in Secrets Manager, then the next order still confirms with one
    charge: its first request is refused (401), the key is re-read once, the request repeated.

    Fails if: HttpPaymentGateway._send stops re-reading the secret on a 401 (the order would
    fail with PaymentProviderError and be compensated), or re-reads it on every request.
    """
    stack = running.stack
    resources = stack.resources
    assert resources is not None
    key_secret = resources.payment_key_secret_arn
    assert key_secret is not None
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=10)
    _, warm = running.api.post_order(running.bob, order_body((sku, 1)), f"f14-{uuid.uuid4().hex}")
    with stack.db() as conn:
        wait_terminal(conn, [warm["order_id"]])  # the key is cached now
    rotate_payment_key()
    requests_before = stack.provider.ledger.requests_received
    reads_before = secret_reads.count(key_secret)

    _, accepted = running.api.post_order(
        running.bob, order_body((sku, 1)), f"f14-{uuid.uuid4().hex}"
    )
    with stack.db() as conn:
        statuses = wait_terminal(conn, [accepted["order_id"]])

    assert statuses == {accepted["order_id"]: "CONFIRMED"}
    assert charges(running, accepted["order_id"]) == 1
    assert stack.provider.ledger.requests_received - requests_before == 2  # 401, then the charge
    assert secret_reads.count(key_secret) - reads_before == 1


def test_f14_a_rotated_secret_is_picked_up_after_the_cache_max_age_without_restart(
    running: Running, rotate_payment_key: Callable[[], str], secret_reads: list[str]
) -> None:
    """Given one TakePayment environment configured with SECRET_MAX_AGE_S=1 (the template's
    value is the 300 s default) that charged an order with the cached key, when the key is
    rolled and the max age has passed, then the same environment (no restart, no new cold start)
    reads the secret again by itself and its next charge goes out with the new key at once:
    one request, no 401.

    Fails if: `max_age=secret_max_age_s()` is dropped from adapters/secrets.secret_string
    (Powertools' default 5 s would still serve the old key: a 401 and a forced re-read) or
    SECRET_MAX_AGE_S is no longer read.
    """
    stack = running.stack
    resources = stack.resources
    assert resources is not None
    key_secret = resources.payment_key_secret_arn
    assert key_secret is not None
    take_payment = pool(stack, "take_payment")
    environment = FunctionWorker(
        replace(
            take_payment.config,
            environment={**take_payment.config.environment, "SECRET_MAX_AGE_S": "1"},
        ),
        running.logs,
    )
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=10)
    reserve = pool(stack, "reserve_inventory")
    orders = [insert_received_order(running, sku, 1) for _ in range(2)]
    states = [{"order": o.model_dump(mode="json")} for o in orders]
    for state in states:
        state["reservation"] = invoke_ok(reserve, state)
    try:
        invoke_ok(environment, states[0])  # reads and caches the key
        reads_before = secret_reads.count(key_secret)
        rotate_payment_key()
        time.sleep(1.5)  # past SECRET_MAX_AGE_S
        requests_before = stack.provider.ledger.requests_received

        invoke_ok(environment, states[1])

        requests = stack.provider.ledger.requests_received - requests_before
        reads = secret_reads.count(key_secret) - reads_before
        assert (environment.cold_starts, environment.invocations) == (1, 2)
    finally:
        environment.stop()
    assert [charges(running, o.order_id) for o in orders] == [1, 1]
    assert requests == 1  # the new key on the first try
    assert reads == 1
