"""The one place function code reads its configuration (environment variables).

Values are read once per execution environment (at first use, not at import) so a handler
module can be imported for smoke tests without any environment set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


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
    connect_timeout_s: int
    statement_timeout_ms: int


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


@cache
def database_settings() -> DatabaseSettings:
    auth = os.environ.get("DB_AUTH", "iam")
    if auth not in {"iam", "secret"}:
        raise ConfigurationError(f"DB_AUTH must be 'iam' or 'secret', not {auth!r}")
    return DatabaseSettings(
        host=_required("DB_HOST"),
        port=_int("DB_PORT", 5432),
        name=_required("DB_NAME"),
        user=os.environ.get("DB_USER", ""),
        auth=auth,
        secret_arn=os.environ.get("DB_SECRET_ARN") or None,
        sslmode=os.environ.get("DB_SSLMODE", "verify-full"),
        connect_timeout_s=_int("DB_CONNECT_TIMEOUT_S", 3),
        statement_timeout_ms=_int("DB_STATEMENT_TIMEOUT_MS", 5000),
    )


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
