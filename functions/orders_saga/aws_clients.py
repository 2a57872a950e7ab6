"""The one place AWS clients are built: explicit timeouts and retry budget (F03, F07).

Clients are created on first use and cached for the life of the execution environment (F04);
no import makes a network call (tests/catalogue/test_f04_cold_start.py).

Clients come from botocore, not boto3 (issue 12): importing boto3 also imports s3transfer and
boto3's own session layer at every cold start, for nothing we call (docs/performance.md lists
what each function loads). One botocore session serves every client, so the
endpoint and partition data are loaded once per environment, not once per client.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config

from orders_saga.config import aws_client_settings

if TYPE_CHECKING:
    from mypy_boto3_codedeploy import CodeDeployClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient


@cache
def botocore_config() -> Config:
    settings = aws_client_settings()
    # "standard" mode retries throttling and transient errors with jittered backoff; the
    # attempt count is bounded here because Step Functions and SQS own the outer retries (F03).
    return Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        tcp_keepalive=True,
    )


# A botocore session is not safe to build clients from concurrently; Lambda runs one
# invocation at a time, but the local tools and tests share an environment across threads.
_session_lock = threading.Lock()


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


@cache
def _client(service: str) -> Any:
    with _session_lock:
        return _session().create_client(service, config=botocore_config())


def dynamodb() -> DynamoDBClient:
    client: DynamoDBClient = _client("dynamodb")
    return client


def sqs() -> SQSClient:
    client: SQSClient = _client("sqs")
    return client


def stepfunctions() -> SFNClient:
    client: SFNClient = _client("stepfunctions")
    return client


def secretsmanager() -> SecretsManagerClient:
    client: SecretsManagerClient = _client("secretsmanager")
    return client


def lambda_() -> LambdaClient:
    """Lambda (the pre-traffic hook invokes a new version; F12)."""
    client: LambdaClient = _client("lambda")
    return client


def codedeploy() -> CodeDeployClient:
    """CodeDeploy (the pre-traffic hook reads its deployment and reports its status; F12)."""
    client: CodeDeployClient = _client("codedeploy")
    return client
