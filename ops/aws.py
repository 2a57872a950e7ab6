"""AWS clients for the operator's tool: built lazily, with explicit timeouts and retries.

Only the clients a command needs are created, so ``intake status`` never asks for DynamoDB
credentials it does not use. The same F03/F07 rules as the functions apply: bounded
attempts with botocore's jittered "standard" retries, and no call can hang a terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ops.local_map import DEFAULT_ENDPOINT, LocalStackMap

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

# An operator is waiting at a prompt: fail within seconds rather than the SDK's 60 s default.
CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=20,
    retries={"mode": "standard", "total_max_attempts": 4},
)


class AwsClients:
    """One boto3 session; one client per service, created on first use."""

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        service_endpoints: Mapping[str, str] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        key_id, secret = credentials or (None, None)
        self._session = boto3.session.Session(
            region_name=region, aws_access_key_id=key_id, aws_secret_access_key=secret
        )
        # None lets boto3 fall back to AWS_ENDPOINT_URL (the local stack and the tests).
        self._endpoint_url = endpoint_url
        # boto3 service name -> endpoint: the local stack serves DynamoDB on its own port.
        self._service_endpoints = dict(service_endpoints or {})

    @classmethod
    def for_local_stack(cls, local: LocalStackMap, *, region: str | None = None) -> AwsClients:
        """Clients for the local stack of a resource map (ops/local_map.py)."""
        return cls(
            region=region or local.region,
            endpoint_url=local.endpoint_for(DEFAULT_ENDPOINT),
            service_endpoints=local.endpoints,
            credentials=(local.access_key_id, local.secret_access_key),
        )

    def endpoint_for(self, service: str) -> str | None:
        return self._service_endpoints.get(service, self._endpoint_url)

    def _client(self, service: str) -> Any:
        return self._session.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_for(service), config=CLIENT_CONFIG
        )

    @property
    def region(self) -> str | None:
        return self._session.region_name

    @cached_property
    def sqs(self) -> SQSClient:
        client: SQSClient = self._client("sqs")
        return client

    @cached_property
    def sfn(self) -> SFNClient:
        client: SFNClient = self._client("stepfunctions")
        return client

    @cached_property
    def lambda_(self) -> LambdaClient:
        client: LambdaClient = self._client("lambda")
        return client

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    @cached_property
    def cloudformation(self) -> Any:
        # No boto3-stubs package for CloudFormation in the dev group; one call is used.
        return self._client("cloudformation")

    @cached_property
    def cloudwatch(self) -> Any:
        # Same: only get_metric_statistics is used.
        return self._client("cloudwatch")

    # The preflight's read-only calls (ops/preflight.py); one or two calls each, no stubs.
    @cached_property
    def ssm(self) -> Any:
        return self._client("ssm")

    @cached_property
    def apigateway(self) -> Any:
        return self._client("apigateway")

    @cached_property
    def iam(self) -> Any:
        return self._client("iam")

    @cached_property
    def sts(self) -> Any:
        return self._client("sts")

    @cached_property
    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self._client("secretsmanager")
        return client


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", error))
