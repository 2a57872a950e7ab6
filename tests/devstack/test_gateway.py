"""The local API Gateway: authorizer, request validator, proxy event, limits (F11)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from devstack.gateway import MAX_PAYLOAD_BYTES, LocalApiGateway
from tests.devstack.mini_stack import RunningStack, running_stack

ORDER = {"items": [{"sku": "SKU-APPLE", "quantity": 1}], "currency": "EUR"}


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with running_stack() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(stack: RunningStack) -> Iterator[LocalApiGateway]:
    res = stack.resources
    with LocalApiGateway(
        stack.aws.template,
        invokers=stack.pools,
        invoked_arns={lid: fn.alias_arn for lid, fn in res.functions.items()},
        user_pool_id=res.user_pool_id,
        app_client_ids=[res.user_pool_client_id or ""],
        say=stack.messages.append,
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def token(stack: RunningStack) -> str:
    return stack.aws.create_demo_customer("dave@example.com")


def _post(
    gateway: LocalApiGateway, body: Any, headers: dict[str, str] | None = None
) -> urllib3.BaseHTTPResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return urllib3.request(
        "POST",
        f"{gateway.base_url}/orders",
        body=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        retries=False,
    )


def test_no_token_is_401(gateway: LocalApiGateway) -> None:
    resp = _post(gateway, ORDER, {"Idempotency-Key": "k1"})
    assert resp.status == 401
    assert resp.json() == {"message": "Unauthorized"}


@pytest.mark.parametrize("bad", ["not-a-jwt", "Bearer {token}", "{token}x"])
def test_an_invalid_token_is_401(gateway: LocalApiGateway, token: str, bad: str) -> None:
    resp = _post(
        gateway, ORDER, {"Idempotency-Key": "k1", "Authorization": bad.format(token=token)}
    )
    assert resp.status == 401
    assert resp.json() == {"message": "Unauthorized"}


def test_missing_required_header_is_400_with_the_reason(
    gateway: LocalApiGateway, token: str
) -> None:
    resp = _post(gateway, ORDER, {"Authorization": token})
    assert resp.status == 400
    assert resp.json() == {"message": "Missing required request headers: [Idempotency-Key]"}


def test_invalid_body_is_400_with_the_templates_gateway_response(
    gateway: LocalApiGateway, token: str
) -> None:
    resp = _post(
        gateway, {"items": [], "currency": "GBP"}, {"Authorization": token, "Idempotency-Key": "k"}
    )
    assert resp.status == 400
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    body = resp.json()
    assert body["message"] == "Invalid request body"
    assert "'GBP' is not one of ['EUR', 'USD']" in body["details"]
    assert "[] should be non-empty (at /items)" in body["details"]
    assert body["requestId"] == resp.headers["x-amzn-RequestId"]


def test_a_body_that_is_not_json_is_400(gateway: LocalApiGateway, token: str) -> None:
    resp = _post(gateway, b"{nope", {"Authorization": token, "Idempotency-Key": "k"})
    assert resp.status == 400
    assert resp.json()["message"] == "Invalid request body"


def test_a_valid_request_reaches_the_function_with_claims_and_a_real_proxy_event(
    gateway: LocalApiGateway, stack: RunningStack, token: str
) -> None:
    resp = _post(gateway, ORDER, {"Authorization": token, "Idempotency-Key": "key-1"})
    assert resp.status == 202
    assert resp.headers["X-Probe"] == "yes"
    out = resp.json()
    event = out["event"]
    assert out["invoked_arn"] == stack.resources.function("Api").alias_arn
    assert (event["resource"], event["path"], event["httpMethod"]) == ("/orders", "/orders", "POST")
    assert event["headers"]["Idempotency-Key"] == "key-1"
    assert event["multiValueHeaders"]["Idempotency-Key"] == ["key-1"]
    assert json.loads(event["body"]) == ORDER
    assert event["isBase64Encoded"] is False
    assert event["queryStringParameters"] is None
    ctx = event["requestContext"]
    assert (ctx["stage"], ctx["path"], ctx["resourcePath"]) == ("dev", "/dev/orders", "/orders")
    claims = ctx["authorizer"]["claims"]
    assert claims["email"] == "dave@example.com"
    assert claims["token_use"] == "id"
    assert claims["aud"] == stack.resources.user_pool_client_id
    assert claims["sub"]
    assert claims["exp"].endswith(tuple(str(y) for y in range(2024, 2100)))  # Java date text


def test_path_parameters_and_query_strings(gateway: LocalApiGateway, token: str) -> None:
    resp = urllib3.request(
        "GET",
        f"{gateway.base_url}/orders/o-42?verbose=1&tag=a&tag=b",
        headers={"Authorization": token},
        retries=False,
    )
    event = resp.json()["event"]
    assert event["pathParameters"] == {"order_id": "o-42"}
    assert event["resource"] == "/orders/{order_id}"
    assert event["queryStringParameters"] == {"verbose": "1", "tag": "b"}
    assert event["multiValueQueryStringParameters"]["tag"] == ["a", "b"]


def test_unknown_route_or_missing_stage_is_403(gateway: LocalApiGateway, token: str) -> None:
    for url in (f"{gateway.base_url}/nope", gateway.base_url.rsplit("/", 1)[0] + "/orders"):
        resp = urllib3.request("POST", url, headers={"Authorization": token}, retries=False)
        assert resp.status == 403
        assert resp.json() == {"message": "Missing Authentication Token"}


def test_a_function_error_or_malformed_response_is_502(
    gateway: LocalApiGateway, token: str
) -> None:
    for body in ({**ORDER, "explode": True}, {**ORDER, "malformed": True}):
        resp = _post(gateway, body, {"Authorization": token, "Idempotency-Key": "k"})
        assert resp.status == 502
        assert resp.json() == {"message": "Internal server error"}


def test_payload_over_10_mb_is_413(gateway: LocalApiGateway, token: str) -> None:
    big = b'{"items": ["' + b"x" * MAX_PAYLOAD_BYTES + b'"]}'
    resp = _post(gateway, big, {"Authorization": token, "Idempotency-Key": "k"})
    assert resp.status == 413
    assert resp.json() == {"message": "Request Too Long"}
