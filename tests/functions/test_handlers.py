"""Handlers with real-format events against moto, the real PostgreSQL and the fake provider."""

from __future__ import annotations

import json
from typing import Any, cast

import boto3
import psycopg
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from devstack.payment_provider import PaymentProvider
from tests.fixtures import AwsResources

CUSTOMER_A = "11111111-aaaa-4aaa-8aaa-111111111111"
CUSTOMER_B = "22222222-bbbb-4bbb-8bbb-222222222222"
ORDER_BODY = {
    "items": [{"sku": "SKU-APPLE", "quantity": 2}],
    "payment_method": "pm_card_visa",
    "currency": "EUR",
}


def rest_event(
    method: str,
    path: str,
    *,
    customer: str | None = CUSTOMER_A,
    body: Any = None,
    headers: dict[str, str] | None = None,
    path_params: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "resource": "/orders/{order_id}" if path_params else "/orders",
        "path": path,
        "httpMethod": method,
        "headers": headers or {},
        "multiValueHeaders": {k: [v] for k, v in (headers or {}).items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/orders",
            "httpMethod": method,
            "path": f"/dev{path}",
            "stage": "dev",
            "requestId": "req-1",
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": {"claims": {"sub": customer}} if customer else {},
        },
        "body": body if body is None or isinstance(body, str) else json.dumps(body),
        "isBase64Encoded": False,
    }


def post_order(
    context: LambdaContext, key: str, body: Any = ORDER_BODY, customer: str = CUSTOMER_A
) -> dict[str, Any]:
    from orders_saga.handlers import api

    response: dict[str, Any] = api.handler(
        rest_event(
            "POST", "/orders", body=body, headers={"Idempotency-Key": key}, customer=customer
        ),
        context,
    )
    return response


def count(db: psycopg.Connection, sql: str) -> int:
    row = db.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_post_accepts_the_order_and_a_retry_returns_the_first_response(
    function_env: AwsResources, db: psycopg.Connection, lambda_context: LambdaContext
) -> None:
    first = post_order(lambda_context, "key-0000001")
    retry = post_order(lambda_context, "key-0000001")

    assert first["statusCode"] == 202
    assert json.loads(retry["body"]) == json.loads(first["body"])
    assert count(db, "SELECT count(*) FROM orders") == 1
    assert len(function_env.sqs_messages(function_env.orders_queue_url)) == 1


@pytest.mark.parametrize(
    ("called", "expected_prefix"),
    [("/dev/orders", "/dev"), ("/shop/v1/orders", "/shop/v1"), ("/orders", "")],
    ids=["execute-api stage", "custom domain base path", "custom domain root"],
)
def test_location_and_status_url_keep_the_path_the_client_called(
    function_env: AwsResources,
    db: psycopg.Connection,
    lambda_context: LambdaContext,
    called: str,
    expected_prefix: str,
) -> None:
    """Issue 10, finding 11: "/orders/<id>" resolved against https://host/dev/ is outside the
    stage (API Gateway answers 403 Missing Authentication Token).

    Fails if: the handler stops prefixing the resource path with what requestContext.path adds
    (the stage on the execute-api host, the base path on a custom domain)."""
    from orders_saga.handlers import api

    event = rest_event(
        "POST", "/orders", body=ORDER_BODY, headers={"Idempotency-Key": f"key-{called[1:4]}-url"}
    )
    event["requestContext"]["path"] = called

    response = api.handler(event, lambda_context)

    body = json.loads(response["body"])
    expected = f"{expected_prefix}/orders/{body['order_id']}"
    assert response["statusCode"] == 202
    assert body["status_url"] == expected
    assert response["multiValueHeaders"]["Location"] == [expected]


def test_the_same_key_with_a_different_body_is_refused(
    function_env: AwsResources, db: psycopg.Connection, lambda_context: LambdaContext
) -> None:
    post_order(lambda_context, "key-0000002")
    other = {**ORDER_BODY, "items": [{"sku": "SKU-PEAR", "quantity": 1}]}

    response = post_order(lambda_context, "key-0000002", body=other)

    assert response["statusCode"] == 422
    assert "different request body" in json.loads(response["body"])["message"]
    assert count(db, "SELECT count(*) FROM orders") == 1


@pytest.mark.parametrize(
    ("key", "body", "reason_fragment"),
    [
        ("", ORDER_BODY, "Idempotency-Key"),
        ("key-0000003", "{not json", "json"),
        ("key-0000003", {**ORDER_BODY, "currency": "BTC"}, "currency"),
        ("key-0000003", {**ORDER_BODY, "items": []}, "items"),
    ],
    ids=["missing key", "malformed json", "wrong enum", "empty items"],
)
def test_bad_input_gets_400_with_a_reason_and_changes_nothing(
    function_env: AwsResources,
    db: psycopg.Connection,
    lambda_context: LambdaContext,
    key: str,
    body: Any,
    reason_fragment: str,
) -> None:
    response = post_order(lambda_context, key, body=body)

    assert response["statusCode"] == 400
    assert reason_fragment.lower() in response["body"].lower()
    assert count(db, "SELECT count(*) FROM orders") == 0
    assert function_env.sqs_messages(function_env.orders_queue_url) == []


def test_a_customer_reads_only_their_own_order(
    function_env: AwsResources, lambda_context: LambdaContext
) -> None:
    from orders_saga.handlers import api

    order_id = json.loads(post_order(lambda_context, "key-0000004")["body"])["order_id"]
    path = f"/orders/{order_id}"

    mine = api.handler(rest_event("GET", path, path_params={"order_id": order_id}), lambda_context)
    theirs = api.handler(
        rest_event("GET", path, customer=CUSTOMER_B, path_params={"order_id": order_id}),
        lambda_context,
    )
    garbage = api.handler(
        rest_event("GET", "/orders/x", path_params={"order_id": "x"}), lambda_context
    )

    assert mine["statusCode"] == 200
    assert json.loads(mine["body"])["status"] == "RECEIVED"
    assert theirs["statusCode"] == 404
    assert garbage["statusCode"] == 404


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"msg-{i}",
                "receiptHandle": f"rh-{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:orders",
                "awsRegion": "eu-west-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def accepted_message(function_env: AwsResources, lambda_context: LambdaContext, key: str) -> str:
    post_order(lambda_context, key)
    (message,) = function_env.sqs_messages(function_env.orders_queue_url)
    return str(message["Body"])


def executions(function_env: AwsResources) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions")
    return cast(
        "list[dict[str, Any]]",
        sfn.list_executions(stateMachineArn=function_env.state_machine_arn)["executions"],
    )


def test_intake_starts_one_execution_per_order_however_often_delivered(
    function_env: AwsResources, lambda_context: LambdaContext
) -> None:
    from orders_saga.handlers import intake

    body = accepted_message(function_env, lambda_context, "key-0000005")
    order_id = json.loads(body)["order_id"]

    results = [intake.handler(sqs_event(body, body), lambda_context) for _ in range(3)]

    assert all(result == {"batchItemFailures": []} for result in results)
    assert [e["name"] for e in executions(function_env)] == [f"order-{order_id}"]


def test_intake_sends_a_malformed_record_to_the_dlq_and_processes_the_rest(
    function_env: AwsResources, lambda_context: LambdaContext
) -> None:
    """Given a poison record among good ones, the good one starts and the bad one is parked with its reason (F02)."""
    from orders_saga.handlers import intake

    good = accepted_message(function_env, lambda_context, "key-0000006")

    result = intake.handler(
        sqs_event("{oops", good, json.dumps({"schema_version": "9"})), lambda_context
    )

    assert result == {"batchItemFailures": []}
    assert len(executions(function_env)) == 1
    parked = function_env.sqs_messages(function_env.intake_dlq_url)
    assert sorted(m["Body"] for m in parked) == sorted(
        ["{oops", json.dumps({"schema_version": "9"})]
    )
    reasons = [m["MessageAttributes"]["failure_reason"]["StringValue"] for m in parked]
    assert all(reason.startswith("invalid message") for reason in reasons)


def test_intake_reports_only_the_failing_record_when_a_dependency_fails(
    function_env: AwsResources, lambda_context: LambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given Step Functions fails for one order, only that record is retried (F02)."""
    from orders_saga.handlers import intake
    from orders_saga.logic import intake as intake_logic

    first = accepted_message(function_env, lambda_context, "key-0000007")
    second = accepted_message(function_env, lambda_context, "key-0000008")
    failing_order = json.loads(second)["order_id"]
    real_start = intake_logic.start_saga  # type: ignore[attr-defined]

    def flaky_start(arn: str, order: Any) -> dict[str, Any]:
        if order.order_id == failing_order:
            raise ConnectionError("injected: Step Functions unreachable")
        return real_start(arn, order)

    monkeypatch.setattr(intake_logic, "start_saga", flaky_start)

    result = intake.handler(sqs_event(first, second), lambda_context)

    assert result == {"batchItemFailures": [{"itemIdentifier": "msg-1"}]}
    assert [e["name"] for e in executions(function_env)] == [
        f"order-{json.loads(first)['order_id']}"
    ]
    monkeypatch.setattr(intake_logic, "start_saga", real_start)
    assert intake.handler(sqs_event(second), lambda_context) == {"batchItemFailures": []}
    assert len(executions(function_env)) == 2


def saga_state(order_id: str) -> dict[str, Any]:
    return {
        "order": {
            "order_id": order_id,
            "customer_id": CUSTOMER_A,
            "items": ORDER_BODY["items"],
            "payment_method": "pm_card_visa",
            "currency": "EUR",
        }
    }


def test_steps_run_the_happy_path_and_replays_do_nothing_twice(
    function_env: AwsResources,
    db: psycopg.Connection,
    payment_provider: PaymentProvider,
    lambda_context: LambdaContext,
) -> None:
    from orders_saga.handlers import confirm_order, reserve_inventory, take_payment

    order_id = json.loads(post_order(lambda_context, "key-0000009")["body"])["order_id"]
    state = saga_state(order_id)

    for _ in range(2):  # every step delivered twice (F01)
        state["reservation"] = reserve_inventory.handler(state, lambda_context)
    for _ in range(2):
        state["payment"] = take_payment.handler(state, lambda_context)
    for _ in range(2):
        state["confirmation"] = confirm_order.handler(state, lambda_context)

    assert state["reservation"]["amount_cents"] == 240
    assert state["confirmation"] == {"status": "CONFIRMED"}
    assert len(payment_provider.ledger.charges) == 1
    assert count(db, "SELECT available FROM inventory WHERE sku = 'SKU-APPLE'") == 998
    assert count(db, "SELECT count(*) FROM payments") == 1


def test_compensations_refund_a_charge_whose_response_was_lost(
    function_env: AwsResources,
    db: psycopg.Connection,
    payment_provider: PaymentProvider,
    lambda_context: LambdaContext,
) -> None:
    """Given the charge happened but TakePayment never saw it, RefundPayment finds and refunds it (F09)."""
    from orders_saga.errors import TransientError
    from orders_saga.handlers import (
        mark_order_failed,
        refund_payment,
        release_inventory,
        reserve_inventory,
        take_payment,
    )

    order_id = json.loads(post_order(lambda_context, "key-0000010")["body"])["order_id"]
    state = saga_state(order_id)
    state["reservation"] = reserve_inventory.handler(state, lambda_context)
    payment_provider.faults.set(lose_next_charge_responses=1)
    with pytest.raises(TransientError):
        take_payment.handler(state, lambda_context)
    clean = {
        "order": state["order"],
        "error": {"Error": "TransientError", "Cause": "retries exhausted"},
    }

    refund = refund_payment.handler(clean, lambda_context)
    released = release_inventory.handler(clean, lambda_context)
    failed = mark_order_failed.handler(clean, lambda_context)

    assert refund["refunded"] is True
    assert released == {"released_units": 2}
    assert failed["status"] == "FAILED"
    assert len(payment_provider.ledger.charges) == 1
    assert len(payment_provider.ledger.refunds) == 1
    assert count(db, "SELECT available FROM inventory WHERE sku = 'SKU-APPLE'") == 1000


def test_a_declined_payment_raises_the_business_error(
    function_env: AwsResources, payment_provider: PaymentProvider, lambda_context: LambdaContext
) -> None:
    from orders_saga.errors import PaymentDeclined
    from orders_saga.handlers import reserve_inventory, take_payment

    order_id = json.loads(
        post_order(
            lambda_context, "key-0000011", body={**ORDER_BODY, "payment_method": "pm_card_declined"}
        )["body"]
    )["order_id"]
    state = saga_state(order_id)
    state["order"]["payment_method"] = "pm_card_declined"
    state["reservation"] = reserve_inventory.handler(state, lambda_context)

    with pytest.raises(PaymentDeclined):
        take_payment.handler(state, lambda_context)
    assert payment_provider.ledger.charges == []
