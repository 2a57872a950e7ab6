"""The one place function code reads its configuration (environment variables).

Values are read once per execution environment (at first use, not at import) so a handler
module can be imported for smoke tests without any environment set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# The bundles shipped in the code asset (ADR 0008). A plain path: Lambda runs the asset
# unzipped, and importlib.resources would add its own imports to every cold start (F04).
CERTS_DIR = Path(__file__).resolve().parent / "certs"
# TLS modes that verify the server: the only ones a deployed function may use (F16).
VERIFYING_SSLMODES = frozenset({"verify-ca", "verify-full"})


class ConfigurationError(RuntimeError):
    """A required environment variable is missing: a deployment bug, never retried."""


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is required")
    return value


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class AwsClientSettings:
    # F03/F07: explicit SDK bounds instead of botocore's 60 s read timeout and hidden retries.
    connect_timeout_s: float
    read_timeout_s: float
    max_attempts: int


@dataclass(frozen=True)
class DatabaseSettings:
    host: str
    port: int
    name: str
    user: str
    auth: str  # "iam" (RDS Proxy IAM token) or "secret" (username/password secret)
    secret_arn: str | None
    sslmode: str
    # The CA bundle that verifies the server, as a path: one of the bundles shipped in
    # orders_saga/certs in AWS, the local run's own CA locally. Never libpq's "system": psycopg's
    # bundled OpenSSL resolves that to its build path, which Lambda does not have (issue 10).
    sslrootcert: str | None
    connect_timeout_s: int
    # Not sent by the functions (RDS Proxy refuses startup options): Migrate sets it on the
    # application role (ALTER ROLE ... SET statement_timeout), the instance's parameter group
    # sets it for every other session.
    statement_timeout_ms: int
    # PostgreSQL's application_name: the service name (service.yml, via the Powertools
    # variable the stack sets), so operators and the chaos run can tell our sessions apart.
    application_name: str


@dataclass(frozen=True)
class PaymentSettings:
    base_url: str
    api_key_secret_arn: str
    connect_timeout_s: float
    read_timeout_s: float
    breaker_fail_max: int
    breaker_reset_s: float


@cache
def aws_client_settings() -> AwsClientSettings:
    return AwsClientSettings(
        connect_timeout_s=_float("AWS_CONNECT_TIMEOUT_S", 2.0),
        read_timeout_s=_float("AWS_READ_TIMEOUT_S", 5.0),
        max_attempts=_int("AWS_MAX_ATTEMPTS", 3),
    )


def aws_region() -> str:
    """The function's region (Lambda sets AWS_REGION), e.g. for signing an RDS IAM token."""
    return os.environ.get("AWS_REGION") or _required("AWS_DEFAULT_REGION")


def ca_bundle_path(value: str) -> str:
    """``DB_SSLROOTCERT``: a bundle's file name in orders_saga/certs, or an absolute path.

    The file must exist now: a missing bundle is a configuration error the pre-traffic health
    check reports (F12), not a TLS failure on every connection after the traffic shifted.
    """
    if value == "system":
        raise ConfigurationError(
            "DB_SSLROOTCERT=system is not usable on Lambda (psycopg's OpenSSL looks under its own "
            "build path); name a bundle from orders_saga/certs"
        )
    path = Path(value)
    if not path.is_absolute():
        path = CERTS_DIR / value
    if not path.is_file():
        raise ConfigurationError(f"DB_SSLROOTCERT: no CA bundle at {path}")
    return str(path)


@cache
def database_settings() -> DatabaseSettings:
    auth = os.environ.get("DB_AUTH", "iam")
    if auth not in {"iam", "secret"}:
        raise ConfigurationError(f"DB_AUTH must be 'iam' or 'secret', not {auth!r}")
    sslmode = os.environ.get("DB_SSLMODE", "verify-full")
    rootcert = os.environ.get("DB_SSLROOTCERT") or None
    if sslmode in VERIFYING_SSLMODES and rootcert is None:
        raise ConfigurationError(f"DB_SSLMODE={sslmode} needs DB_SSLROOTCERT (a CA bundle)")
    return DatabaseSettings(
        host=_required("DB_HOST"),
        port=_int("DB_PORT", 5432),
        name=_required("DB_NAME"),
        user=os.environ.get("DB_USER", ""),
        auth=auth,
        secret_arn=os.environ.get("DB_SECRET_ARN") or None,
        sslmode=sslmode,
        sslrootcert=ca_bundle_path(rootcert) if rootcert else None,
        connect_timeout_s=_int("DB_CONNECT_TIMEOUT_S", 3),
        statement_timeout_ms=_int("DB_STATEMENT_TIMEOUT_MS", 5000),
        application_name=_required("POWERTOOLS_SERVICE_NAME"),
    )


def app_db_user() -> str:
    """The role the service functions log in as (Migrate configures it: DB_APP_USER)."""
    return _required("DB_APP_USER")


@cache
def payment_settings() -> PaymentSettings:
    return PaymentSettings(
        base_url=_required("PAYMENT_API_URL").rstrip("/"),
        api_key_secret_arn=_required("PAYMENT_API_KEY_SECRET_ARN"),
        connect_timeout_s=_float("PAYMENT_CONNECT_TIMEOUT_S", 2.0),
        read_timeout_s=_float("PAYMENT_READ_TIMEOUT_S", 5.0),
        breaker_fail_max=_int("PAYMENT_BREAKER_FAIL_MAX", 5),
        breaker_reset_s=_float("PAYMENT_BREAKER_RESET_S", 2.0),
    )


def idempotency_table() -> str:
    return _required("IDEMPOTENCY_TABLE")


def idempotency_ttl_s() -> int:
    return _int("IDEMPOTENCY_TTL_S", 24 * 3600)


def orders_queue_url() -> str:
    return _required("ORDERS_QUEUE_URL")


def intake_dlq_url() -> str:
    return _required("INTAKE_DLQ_URL")


def state_machine_arn() -> str:
    return _required("STATE_MACHINE_ARN")


def secret_max_age_s() -> int:
    # F14: a rotated secret is picked up within this many seconds, or at once on auth failure.
    return _int("SECRET_MAX_AGE_S", 300)
