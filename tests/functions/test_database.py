"""One connection per environment, reconnect with fresh credentials, bounded statements, and a
connection RDS Proxy accepts: TLS verified against a shipped bundle, no startup options, no
prepared statements (F06, F07, F14, F16)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from orders_saga.adapters.database import Credentials, Database
from orders_saga.adapters.migrations import configure_app_role
from orders_saga.config import DatabaseSettings
from orders_saga.errors import TransientError
from psycopg import sql

from devstack.pgbouncer import LocalPgBouncer
from devstack.postgres import PostgresSettings
from infra.service import this_service


class CountingCredentials:
    """Hands out the real password, optionally a stale one first, and counts refreshes."""

    def __init__(self, settings: PostgresSettings, *, stale_first: bool = False) -> None:
        self._settings = settings
        self.stale_first = stale_first
        self.calls: list[bool] = []

    def credentials(self, *, refresh: bool) -> Credentials:
        self.calls.append(refresh)
        if self.stale_first and not refresh:
            return Credentials(user=self._settings.user, password="expired-token")
        return Credentials(user=self._settings.user, password=self._settings.password)


def make_database(
    pg: PostgresSettings,
    creds: CountingCredentials,
    *,
    host: str | None = None,
    port: int | None = None,
) -> Database:
    """The adapter with the deployed TLS settings: verify-full against a CA bundle file."""
    settings = DatabaseSettings(
        host=host or pg.host,
        port=port or pg.port,
        name=pg.dbname,
        user=pg.user,
        auth="secret",
        secret_arn=None,
        sslmode="verify-full",
        sslrootcert=pg.sslrootcert,
        connect_timeout_s=3,
        statement_timeout_ms=5000,
        application_name=this_service().name,
    )
    return Database(settings, creds)


def backend_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def login_role(db: psycopg.Connection, migrated_postgres: PostgresSettings) -> Iterator[str]:
    """A fresh login role with a password (what Migrate's app role is, plus rds_iam in AWS)."""
    role = f"probe_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    yield f"{role}:{password}"
    db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def as_login(pg: PostgresSettings, login: str) -> PostgresSettings:
    user, password = login.split(":", 1)
    return pg.as_user(user, password)


def test_one_connection_is_reused_across_invocations(migrated_postgres: PostgresSettings) -> None:
    database = make_database(migrated_postgres, CountingCredentials(migrated_postgres))

    pids = {database.run(backend_pid) for _ in range(5)}

    assert database.connects == 1
    assert len(pids) == 1
    database.close()


def test_the_connection_is_tls_verified_against_the_configured_bundle(
    migrated_postgres: PostgresSettings,
) -> None:
    """Fails if: Database stops passing DB_SSLROOTCERT as sslrootcert (the server accepts TLS
    only and its certificate verifies only against the run's CA)."""
    database = make_database(migrated_postgres, CountingCredentials(migrated_postgres))

    row = database.run(
        lambda conn: conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
    )

    assert row == (True,)
    database.close()


def test_a_killed_connection_is_reopened_once_and_the_work_done_once(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    creds = CountingCredentials(migrated_postgres)
    database = make_database(migrated_postgres, creds)
    first_pid = database.run(backend_pid)
    db.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    runs: list[int] = []

    def insert_event(conn: psycopg.Connection) -> int:
        runs.append(1)
        conn.execute("UPDATE inventory SET available = available - 1 WHERE sku = 'SKU-APPLE'")
        return backend_pid(conn)

    second_pid = database.run(insert_event)

    assert second_pid != first_pid
    assert database.connects == 2
    assert creds.calls == [False, True]  # the reconnect asked for fresh credentials (F14)
    row = db.execute("SELECT available FROM inventory WHERE sku = 'SKU-APPLE'").fetchone()
    assert row == (999,)  # applied exactly once
    database.close()


def test_expired_credentials_are_refreshed_on_reconnect(
    migrated_postgres: PostgresSettings,
) -> None:
    creds = CountingCredentials(migrated_postgres, stale_first=True)
    database = make_database(migrated_postgres, creds)

    assert database.run(backend_pid) > 0

    assert creds.calls == [False, True]
    database.close()


def test_a_slow_statement_is_cancelled_by_the_roles_bound_and_reported_transient(
    db: psycopg.Connection, migrated_postgres: PostgresSettings, login_role: str
) -> None:
    """F07 without startup options: Migrate puts statement_timeout on the role the functions
    log in as, and every session of that role is bounded by it.

    Fails if: configure_app_role stops setting the role's statement_timeout (the sleep would
    run its full 5 s and return), or Database stops turning QueryCanceled into TransientError."""
    login = as_login(migrated_postgres, login_role)
    configure_app_role(db, login.user, statement_timeout_ms=200)
    database = make_database(login, CountingCredentials(login))

    with pytest.raises(TransientError, match="statement timed out"):
        database.run(lambda conn: conn.execute("SELECT pg_sleep(5)"))

    assert database.run(backend_pid) > 0  # the connection survives a cancelled statement
    assert database.connects == 1
    database.close()


def test_migrate_bounds_the_app_role_from_configuration(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    configure_app_role(db, "orders_app", statement_timeout_ms=5000)

    row = db.execute("SELECT rolconfig FROM pg_roles WHERE rolname = 'orders_app'").fetchone()

    assert row == (["statement_timeout=5000ms"],)
    with pytest.raises(ValueError, match=">= 1"):
        configure_app_role(db, "orders_app", statement_timeout_ms=0)


def test_through_the_pooling_proxy_no_startup_option_and_no_prepared_statement(
    migrated_postgres: PostgresSettings, local_proxy: LocalPgBouncer, login_role: str
) -> None:
    """Issue 10, finding 3: RDS Proxy refuses startup options ("RDS Proxy currently doesn't
    support command-line options"), and a protocol-level prepared statement pins the client's
    connection (multiplexing lost). The local proxy refuses the first; the second is seen in
    pg_prepared_statements after more executions than psycopg's prepare threshold (5).

    Fails if: Database sends `options` again (the connect is refused: "unsupported startup
    parameter: options"), or drops prepare_threshold=None (one prepared statement appears)."""
    login = as_login(migrated_postgres, login_role)
    proxy = local_proxy.settings
    database = make_database(
        login,
        CountingCredentials(login),
        host=proxy.host,
        port=proxy.port,
    )

    results = [database.run(lambda conn: conn.execute("SELECT 1 + 1").fetchone()) for _ in range(8)]
    prepared = database.run(
        lambda conn: conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    )

    assert results == [(2,)] * 8
    assert prepared == (0,)
    assert database.connects == 1
    database.close()


def test_the_local_proxy_refuses_what_rds_proxy_refuses(
    migrated_postgres: PostgresSettings, local_proxy: LocalPgBouncer, login_role: str
) -> None:
    """A startup option and a connection without TLS are refused, as by RDS Proxy with
    require_tls; a CA that did not sign the proxy's certificate fails verification.

    Fails if: devstack/pgbouncer.py stops refusing startup parameters it does not track, or
    lets clients in without TLS."""
    login = as_login(migrated_postgres, login_role)
    user, password = login.user, login.password

    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(local_proxy.conninfo(user, password, options="-c statement_timeout=5000"))
    with pytest.raises(psycopg.OperationalError, match="SSL required"):
        psycopg.connect(local_proxy.conninfo(user, password, sslmode="disable"))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(
            local_proxy.conninfo(user, password, sslrootcert="/etc/ssl/certs/ca-certificates.crt")
        )
    with psycopg.connect(local_proxy.conninfo(user, password)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)


def test_an_unreachable_database_is_transient_after_one_retry(
    migrated_postgres: PostgresSettings,
) -> None:
    creds = CountingCredentials(migrated_postgres)
    database = make_database(migrated_postgres, creds, host="127.0.0.1", port=1)

    with pytest.raises(TransientError, match="database unavailable"):
        database.run(backend_pid)

    assert creds.calls == [False, True]
