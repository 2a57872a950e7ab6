"""Secrets read through Powertools Parameters: cached per environment with a max age (F14)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from orders_saga import aws_clients
from orders_saga.config import secret_max_age_s


@cache
def _provider() -> SecretsProvider:
    return SecretsProvider(boto3_client=aws_clients.secretsmanager())


def secret_string(secret_id: str, *, refresh: bool = False) -> str:
    """The secret's value; ``refresh`` bypasses the cache after an auth failure (rotation)."""
    value = _provider().get(secret_id, max_age=secret_max_age_s(), force_fetch=refresh)
    return str(value)


def secret_json(secret_id: str, *, refresh: bool = False) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(secret_string(secret_id, refresh=refresh))
    return parsed
