"""LocalAws: resources made from the template, Step Functions tasks run in the workers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from moto.utilities.utils import load_resource

from tests.devstack.mini_stack import FakePostgres, RunningStack, running_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with running_stack() as running:
        yield running


def _run(stack: RunningStack, order: dict[str, Any]) -> dict[str, Any]:
    sfn = stack.aws.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.resources.state_machine_arn,
        name=f"order-{order['order_id']}",
        input=json.dumps({"order": order}),
    )["executionArn"]
    deadline = time.monotonic() + 30
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return dict(described)


def test_queues_have_the_template_properties_and_redrive_to_the_local_dlq(
    stack: RunningStack,
) -> None:
    res = stack.resources
    attrs = stack.aws.client("sqs").get_queue_attributes(
        QueueUrl=res.orders_queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": res.queue_arns["OrdersDlq"],
        "maxReceiveCount": 3,
    }
    assert res.orders_dlq_url == res.queue_urls["OrdersDlq"]
    assert res.needs_attention_queue_url == res.queue_urls["AttentionQueue"]


def test_table_has_the_key_schema_and_ttl(stack: RunningStack) -> None:
    ddb = stack.aws.client("dynamodb")
    table = stack.resources.idempotency_table
    assert ddb.describe_table(TableName=table)["Table"]["KeySchema"] == [
        {"AttributeName": "id", "KeyType": "HASH"}
    ]
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == ("expiration", "ENABLED")


def test_secrets_hold_the_local_database_login_and_payment_key(stack: RunningStack) -> None:
    sm = stack.aws.client("secretsmanager")
    db = json.loads(sm.get_secret_value(SecretId=stack.resources.db_secret_arn)["SecretString"])
    pg = FakePostgres()
    assert (db["username"], db["password"], db["port"]) == (pg.user, pg.password, pg.port)
    key = sm.get_secret_value(SecretId=stack.resources.payment_key_secret_arn)["SecretString"]
    assert key == stack.aws.payment_api_key


def test_function_environment_is_the_templates_with_local_overrides_only(
    stack: RunningStack,
) -> None:
    res = stack.resources
    reserve = res.function("saga_probe.reserve").config.environment
    assert reserve["IDEMPOTENCY_TABLE"] == res.idempotency_table
    assert reserve["STAGE"] == "dev"
    assert (reserve["DB_HOST"], reserve["DB_SSLMODE"], reserve["DB_AUTH"]) == (
        "127.0.0.1",
        "disable",
        "secret",
    )
    assert reserve["DB_SECRET_ARN"] == res.db_secret_arn
    assert reserve["AWS_ENDPOINT_URL"] == res.endpoint_url
    intake = res.function("Intake").config.environment
    assert intake["STATE_MACHINE_ARN"] == res.state_machine_arn
    assert intake["DB_SECRET_ARN"] == res.db_secret_arn  # the Ref to the attachment
    assert "DB_HOST" not in intake
    assert res.function("Release").config.environment["PAYMENT_API_URL"] == "http://127.0.0.1:9/"
    alias = stack.aws.client("lambda").get_alias(FunctionName=res.function("Api").name, Name="live")
    assert alias["AliasArn"] == res.function("Api").alias_arn


def test_saga_task_runs_in_the_worker_through_the_alias(stack: RunningStack) -> None:
    out = _run(stack, {"order_id": "ok-1"})
    assert out["status"] == "SUCCEEDED"
    assert json.loads(out["output"])["reservation"] == {
        "reserved": True,
        "attempt": 1,
        "fn": stack.resources.function("Reserve").name,
    }


def test_transient_errors_are_retried_with_capped_jittered_backoff(stack: RunningStack) -> None:
    # Given ReserveInventory fails twice with TransientError (retry: 2 s x2, cap 5 s, FULL jitter)
    stack.aws.retry_sleep.requested.clear()
    started = time.monotonic()
    out = _run(stack, {"order_id": "retry-1", "fail_times": 2})
    # Then the third attempt succeeds, the waits were requested and the run did not wait them
    assert out["status"] == "SUCCEEDED"
    assert json.loads(out["output"])["reservation"]["attempt"] == 3
    waits = stack.aws.retry_sleep.requested
    assert len(waits) == 2
    assert 0 <= waits[0] <= 2
    assert 0 <= waits[1] <= 4
    assert time.monotonic() - started < 5
    assert any("scaled x0.01" in m for m in stack.messages)


def test_business_error_compensates_and_escalates(stack: RunningStack) -> None:
    out = _run(stack, {"order_id": "oos-1", "out_of_stock": True})
    assert (out["status"], out["error"]) == ("FAILED", "OrderFailed")
    sqs = stack.aws.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=stack.resources.needs_attention_queue_url, VisibilityTimeout=0
    )["Messages"]
    assert json.loads(messages[0]["Body"])["order_id"] == "oos-1"


def test_demo_customer_token_is_a_verifiable_id_token(stack: RunningStack) -> None:
    res = stack.resources
    token = stack.aws.create_demo_customer("carol@example.com")
    jwks = jwt.PyJWKSet.from_dict(load_resource("cognitoidp/resources/jwks-public.json"))
    claims = jwt.decode(
        token,
        key=jwks[jwt.get_unverified_header(token)["kid"]],
        algorithms=["RS256"],
        audience=res.user_pool_client_id,
        issuer=f"https://cognito-idp.eu-west-1.amazonaws.com/{res.user_pool_id}",
    )
    assert (claims["token_use"], claims["email"]) == ("id", "carol@example.com")
