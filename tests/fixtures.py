"""Shared fixtures: moto server, real PostgreSQL, fake payment provider, function environment."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import boto3
import psycopg
import pytest
import urllib3
from aws_lambda_powertools.utilities.typing import LambdaContext
from moto.server import ThreadedMotoServer

from devstack.moto_fidelity import fidelity_applied
from devstack.payment_provider import PaymentProvider
from devstack.pgbouncer import LocalPgBouncer
from devstack.postgres import LocalPostgres, PostgresSettings
from devstack.template import CfnTemplate, QueueSpec
from infra.service import this_service

CDK_OUT = Path(__file__).resolve().parents[1] / "cdk.out"

SEED_INVENTORY = [
    # sku, name, unit price (cents), available units
    ("SKU-APPLE", "Apple", 120, 1000),
    ("SKU-PEAR", "Pear", 150, 1000),
    ("SKU-LAST-ONE", "The last one", 9900, 1),
    ("SKU-SOLD-OUT", "Sold out", 500, 0),
]
PAYMENT_API_KEY = "sk_test_local"


def reset_function_caches() -> None:
    """Forget per-environment state, as a new Lambda execution environment would."""
    from orders_saga import aws_clients, config
    from orders_saga.adapters import database, payments, secrets

    if database.database.cache_info().currsize:
        database.database().close()
    for cached in (
        config.aws_client_settings,
        config.database_settings,
        config.payment_settings,
        aws_clients.botocore_config,
        aws_clients._client,
        aws_clients._session,
        database.database,
        payments.payment_gateway,
        secrets._provider,
    ):
        cached.cache_clear()


# Read once, at plugin import (conftest fixed them): a local stack started first in the session
# points MOTO_PORT at its own server while it runs.
_FUNCTION_TESTS_MOTO_PORT = int(os.environ["MOTO_PORT"])
_FUNCTION_TESTS_ENDPOINT = os.environ["AWS_ENDPOINT_URL"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    port = _FUNCTION_TESTS_MOTO_PORT
    # The functions' concurrency tests rely on AWS's atomicity (DynamoDB items, SQS queues).
    with fidelity_applied():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield _FUNCTION_TESTS_ENDPOINT
        finally:
            server.stop()


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    # No skip when PostgreSQL is missing: the suite fails with the install hint instead.
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def postgres_settings(local_postgres: LocalPostgres) -> PostgresSettings:
    return local_postgres.settings


@pytest.fixture(scope="session")
def local_proxy(local_postgres: LocalPostgres) -> Iterator[LocalPgBouncer]:
    """The RDS Proxy stand-in (pgbouncer, transaction pooling, TLS) in front of the session's
    PostgreSQL, as the local stack runs it."""
    with LocalPgBouncer(local_postgres.settings, local_postgres.ca, pool_size=4) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def migrated_postgres(postgres_settings: PostgresSettings) -> PostgresSettings:
    from orders_saga.adapters.migrations import apply_migrations

    with psycopg.connect(postgres_settings.conninfo()) as conn:
        apply_migrations(conn)
    return postgres_settings


@pytest.fixture
def db(migrated_postgres: PostgresSettings) -> Iterator[psycopg.Connection]:
    """An empty schema with seed inventory; the connection is autocommit, for assertions."""
    with psycopg.connect(migrated_postgres.conninfo(), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE order_events, payments, reservations, orders, inventory RESTART IDENTITY"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO inventory (sku, name, unit_price_cents, available)"
                " VALUES (%s, %s, %s, %s)",
                SEED_INVENTORY,
            )
        yield conn


@pytest.fixture
def payment_provider() -> Iterator[PaymentProvider]:
    with PaymentProvider(api_key=PAYMENT_API_KEY) as provider:
        yield provider


@dataclass(frozen=True)
class AwsResources:
    orders_queue_url: str
    intake_dlq_url: str
    needs_attention_queue_url: str
    state_machine_arn: str
    db_secret_arn: str
    payment_key_secret_arn: str

    def sqs_messages(self, queue_url: str) -> list[dict[str, Any]]:
        """Drain and return every visible message of a queue."""
        sqs = boto3.client("sqs")
        messages: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not batch:
                return messages
            messages.extend(cast("list[dict[str, Any]]", batch))


@pytest.fixture(scope="session")
def dev_template() -> CfnTemplate:
    """The synthesized dev template: moto resources are built from it so they cannot drift."""
    if not this_service().template_path("dev").exists():
        pytest.fail("the dev template is missing: run `make synth` first")
    return CfnTemplate.load(str(CDK_OUT), this_service().stack("dev"))


def _queue_attributes(spec: QueueSpec, dlq_arn: str | None) -> Any:
    attributes = {
        "VisibilityTimeout": str(spec.visibility_timeout_s),
        "MessageRetentionPeriod": str(spec.message_retention_s),
    }
    if spec.redrive is not None and dlq_arn is not None:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": spec.redrive.max_receive_count}
        )
    return attributes


@pytest.fixture
def aws(
    moto_server: str, migrated_postgres: PostgresSettings, dev_template: CfnTemplate
) -> AwsResources:
    """Fresh moto state with the functions' resources, shaped as the template defines them."""
    urllib3.request("POST", f"{moto_server}/moto-api/reset")
    (table,) = [r.properties for r in dev_template.resources("AWS::DynamoDB::Table")]
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName=os.environ["IDEMPOTENCY_TABLE"],
        KeySchema=table["KeySchema"],
        AttributeDefinitions=table["AttributeDefinitions"],
        BillingMode=table["BillingMode"],
    )
    ddb.update_time_to_live(
        TableName=os.environ["IDEMPOTENCY_TABLE"],
        TimeToLiveSpecification=table["TimeToLiveSpecification"],
    )
    sqs = boto3.client("sqs")
    (mapping,) = dev_template.event_source_mappings()
    orders_spec = dev_template.queue(mapping.queue_logical_id)
    assert orders_spec.redrive is not None
    dlq_spec = dev_template.queue(orders_spec.redrive.dead_letter_queue_logical_id)
    dlq_url = sqs.create_queue(
        QueueName="orders-dlq", Attributes=_queue_attributes(dlq_spec, None)
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    orders_url = sqs.create_queue(
        QueueName="orders", Attributes=_queue_attributes(orders_spec, dlq_arn)
    )["QueueUrl"]
    attention_url = sqs.create_queue(QueueName="needs-attention")["QueueUrl"]
    secrets = boto3.client("secretsmanager")
    db_secret = secrets.create_secret(Name="db", SecretString=migrated_postgres.secret_string())[
        "ARN"
    ]
    key_secret = secrets.create_secret(Name="payment-key", SecretString=PAYMENT_API_KEY)["ARN"]
    # The intake only starts executions here; the saga itself runs in tests/e2e.
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(
        name="saga",
        definition=json.dumps(
            {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
        ),
        roleArn="arn:aws:iam::123456789012:role/saga",
    )["stateMachineArn"]
    return AwsResources(orders_url, dlq_url, attention_url, machine, db_secret, key_secret)


@pytest.fixture
def function_env(
    monkeypatch: pytest.MonkeyPatch,
    aws: AwsResources,
    db: psycopg.Connection,
    migrated_postgres: PostgresSettings,
    payment_provider: PaymentProvider,
) -> Iterator[AwsResources]:
    """The environment every function sees, pointing at moto, PostgreSQL and the fake provider."""
    env = {
        **migrated_postgres.env(),
        "DB_AUTH": "secret",
        "DB_SECRET_ARN": aws.db_secret_arn,
        "ORDERS_QUEUE_URL": aws.orders_queue_url,
        "INTAKE_DLQ_URL": aws.intake_dlq_url,
        "STATE_MACHINE_ARN": aws.state_machine_arn,
        "PAYMENT_API_URL": payment_provider.base_url,
        "PAYMENT_API_KEY_SECRET_ARN": aws.payment_key_secret_arn,
        "PAYMENT_READ_TIMEOUT_S": "1.0",
        "PAYMENT_BREAKER_FAIL_MAX": "3",
        "PAYMENT_BREAKER_RESET_S": "60",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_function_caches()
    yield aws
    reset_function_caches()


@dataclass
class FakeLambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    function_name: str = "test-function"
    function_version: str = "1"
    memory_limit_in_mb: int = 256
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    timeout_s: float = 30.0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:eu-west-1:123456789012:function:{self.function_name}:live"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_s * 1000)


@pytest.fixture
def lambda_context() -> LambdaContext:
    return cast("LambdaContext", FakeLambdaContext())
