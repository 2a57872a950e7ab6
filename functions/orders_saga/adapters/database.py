"""PostgreSQL through RDS Proxy: one connection per execution environment (F06, F07, F14).

The connection is opened on first use, reused by every later invocation of the environment,
and re-opened with fresh credentials (a new IAM token, or a re-read secret) when it breaks.
A transaction that failed because the connection broke is retried once on a new connection:
PostgreSQL rolled it back, so nothing is done twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Protocol, TypeVar

import psycopg

from orders_saga.adapters import rds_iam
from orders_saga.config import DatabaseSettings, aws_region, database_settings
from orders_saga.errors import TransientError
from orders_saga.observability import logger

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


class CredentialsProvider(Protocol):
    def credentials(self, *, refresh: bool) -> Credentials: ...


class IamTokenCredentials:
    """A fresh 15-minute RDS IAM token for every new connection (signed locally, no call)."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self._settings = settings

    def credentials(self, *, refresh: bool) -> Credentials:
        token = rds_iam.auth_token(
            host=self._settings.host,
            port=self._settings.port,
            user=self._settings.user,
            region=aws_region(),
        )
        return Credentials(user=self._settings.user, password=token)


class SecretCredentials:
    """Username/password from Secrets Manager; re-read on refresh so rotation is survived."""

    def __init__(self, secret_arn: str) -> None:
        self._secret_arn = secret_arn

    def credentials(self, *, refresh: bool) -> Credentials:
        # Imported here: only Migrate logs in with a secret, and Secrets Manager through
        # Powertools Parameters brings boto3 into the cold start of every other function.
        from orders_saga.adapters.secrets import secret_json  # noqa: PLC0415 - see above

        secret = secret_json(self._secret_arn, refresh=refresh)
        return Credentials(user=str(secret["username"]), password=str(secret["password"]))


class _ConnectionBroke(Exception):
    pass


class Database:
    def __init__(self, settings: DatabaseSettings, credentials: CredentialsProvider) -> None:
        self._settings = settings
        self._credentials = credentials
        self._conn: psycopg.Connection | None = None
        # One connection per environment; the lock only matters where several threads share an
        # environment (local tools), Lambda itself runs one invocation at a time.
        self._lock = threading.RLock()
        self.connects = 0  # observable for tests: connections opened by this environment

    def _connect(self, *, refresh: bool) -> psycopg.Connection:
        creds = self._credentials.credentials(refresh=refresh)
        params: dict[str, str | int] = {
            "host": self._settings.host,
            "port": self._settings.port,
            "dbname": self._settings.name,
            "user": creds.user,
            "password": creds.password,
            "connect_timeout": self._settings.connect_timeout_s,
            "sslmode": self._settings.sslmode,
            # No "options" (e.g. -c statement_timeout): RDS Proxy refuses any startup option.
            # The F07 bound is on the role (Migrate) and in the instance's parameter group.
            "application_name": self._settings.application_name,
        }
        if self._settings.sslrootcert is not None:
            # A shipped bundle (Amazon roots for the proxy, the RDS CAs for the instance):
            # Lambda has no system store psycopg's OpenSSL would find.
            params["sslrootcert"] = self._settings.sslrootcert
        # prepare_threshold=None: no protocol-level prepared statements. psycopg prepares a
        # query after its 5th execution; behind RDS Proxy that pins the client to one database
        # connection for the rest of its life (multiplexing lost, F06), behind a transaction
        # pooler the next transaction may not find the statement at all.
        conn = psycopg.connect(**params, prepare_threshold=None)  # type: ignore[arg-type]
        self.connects += 1
        return conn

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                logger.debug("closing a broken connection failed")
            self._conn = None

    def _run_once(self, work: Callable[[psycopg.Connection], T], *, refresh: bool) -> T:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._discard()
            try:
                self._conn = self._connect(refresh=refresh)
            except psycopg.OperationalError as error:
                raise _ConnectionBroke(str(error)) from error
        conn = self._conn
        try:
            with conn.transaction():
                return work(conn)
        except psycopg.errors.QueryCanceled as error:
            raise TransientError(f"statement timed out: {error}") from error
        except psycopg.OperationalError as error:
            self._discard()
            raise _ConnectionBroke(str(error)) from error

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run ``work`` in one transaction; on a broken connection reconnect once and rerun.

        Rerunning is safe: an interrupted transaction was rolled back, and every unit of work
        here is idempotent at the database level too (unique keys, guarded state changes), so
        even a connection lost during COMMIT cannot apply a change twice.
        """
        with self._lock:
            try:
                return self._run_once(work, refresh=False)
            except _ConnectionBroke as first:
                logger.warning(
                    "database connection broke; reconnecting", extra={"error": str(first)}
                )
            try:
                # Fresh credentials: the failure may be an expired token or a rotated secret (F14).
                return self._run_once(work, refresh=True)
            except _ConnectionBroke as second:
                raise TransientError(f"database unavailable: {second}") from second

    def close(self) -> None:
        with self._lock:
            self._discard()


@cache
def database() -> Database:
    """The environment's database handle (created on first use, never at import: F04)."""
    settings = database_settings()
    credentials: CredentialsProvider
    if settings.auth == "iam":
        credentials = IamTokenCredentials(settings)
    else:
        if not settings.secret_arn:
            raise TransientError("DB_AUTH=secret needs DB_SECRET_ARN")
        credentials = SecretCredentials(settings.secret_arn)
    return Database(settings, credentials)
