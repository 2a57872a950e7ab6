"""One connection per environment, reconnect with fresh credentials, bounded statements (F06, F07, F14)."""

from __future__ import annotations

import psycopg
import pytest
from orders_saga.adapters.database import Credentials, Database
from orders_saga.config import DatabaseSettings
from orders_saga.errors import TransientError

from devstack.postgres import PostgresSettings


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
    pg: PostgresSettings, creds: CountingCredentials, *, statement_ms: int = 5000
) -> Database:
    settings = DatabaseSettings(
        host=pg.host,
        port=pg.port,
        name=pg.dbname,
        user=pg.user,
        auth="secret",
        secret_arn=None,
        sslmode="disable",
        connect_timeout_s=3,
        statement_timeout_ms=statement_ms,
    )
    return Database(settings, creds)


def backend_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_one_connection_is_reused_across_invocations(migrated_postgres: PostgresSettings) -> None:
    database = make_database(migrated_postgres, CountingCredentials(migrated_postgres))

    pids = {database.run(backend_pid) for _ in range(5)}

    assert database.connects == 1
    assert len(pids) == 1
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


def test_a_slow_statement_is_cancelled_and_reported_transient(
    migrated_postgres: PostgresSettings,
) -> None:
    database = make_database(
        migrated_postgres, CountingCredentials(migrated_postgres), statement_ms=200
    )

    with pytest.raises(TransientError, match="statement timed out"):
        database.run(lambda conn: conn.execute("SELECT pg_sleep(5)"))

    assert database.run(backend_pid) > 0  # the connection survives a cancelled statement
    assert database.connects == 1
    database.close()


def test_an_unreachable_database_is_transient_after_one_retry(
    migrated_postgres: PostgresSettings,
) -> None:
    creds = CountingCredentials(migrated_postgres)
    settings = DatabaseSettings(
        host="127.0.0.1",
        port=1,
        name="orders",
        user="nobody",
        auth="secret",
        secret_arn=None,
        sslmode="disable",
        connect_timeout_s=1,
        statement_timeout_ms=1000,
    )
    database = Database(settings, creds)

    with pytest.raises(TransientError, match="database unavailable"):
        database.run(backend_pid)

    assert creds.calls == [False, True]
