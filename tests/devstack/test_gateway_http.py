"""The local API Gateway's HTTP layer (issue 13): a malformed request gets one short 4xx in the
error shape, never a hang, a dropped connection or a second request read out of its body.

Requests are raw bytes on a socket, so each test controls the framing, and each reads exactly
one response, then half-closes and reads until the server closes: anything more would be an
answer to a "second request". The gateway is built from the synthesized dev template (its
GatewayResponses are the deployed ones), with a function double that echoes what it was handed
and Id tokens signed with moto's Cognito key, the key the gateway verifies
(tests/devstack/test_gateway.py covers the authorizer against moto's own tokens).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import jwt
import pytest
from moto.utilities.utils import load_resource

from devstack.gateway import MAX_JSON_DEPTH, MAX_LISTED_ERRORS, MAX_PAYLOAD_BYTES, LocalApiGateway
from devstack.lambda_runtime import InvokeResult
from devstack.template import CfnTemplate
from tests.localstack import Running, new_key

OPENAPI = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text(encoding="utf-8")
)
POOL_ID = "eu-west-1_gatewayhttp"
CLIENT_ID = "gateway-http-client"
ORDER = {
    "items": [{"sku": "SKU-APPLE", "quantity": 1}],
    "payment_method": "pm_card_visa",
    "currency": "EUR",
}
SHORT = 1024  # bytes: an error body is a sentence, never the request read back
READ_TIMEOUT_S = 1.0


@dataclass
class EchoFunction:
    """The Api function's stand-in: answers 202 with the body and headers it was handed."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult:
        self.events.append(event)
        echoed = {"body": event["body"], "headers": event["multiValueHeaders"]}
        response = {"statusCode": 202, "body": json.dumps(echoed)}
        return InvokeResult(payload=json.dumps(response), errored=False)


@dataclass(frozen=True)
class Exchange:
    status_line: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    after: bytes  # what the server sent after the first response, until it closed

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def function() -> EchoFunction:
    return EchoFunction()


@pytest.fixture(scope="module")
def gateway(dev_template: CfnTemplate, function: EchoFunction) -> Iterator[LocalApiGateway]:
    functions = {
        dev_template.function_of(m.integration_target_logical_id)
        for m in dev_template.api_methods()
        if m.integration_target_logical_id is not None
    }
    with LocalApiGateway(
        dev_template,
        invokers=dict.fromkeys(functions, function),
        user_pool_id=POOL_ID,
        app_client_ids=[CLIENT_ID],
        say=lambda _m: None,
        read_timeout=READ_TIMEOUT_S,
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def token(dev_template: CfnTemplate) -> str:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "aud": CLIENT_ID,
        "iss": f"https://cognito-idp.{dev_template.region}.amazonaws.com/{POOL_ID}",
        "token_use": "id",
        "email": "raw-http@example.com",
        "iat": now,
        "exp": now + 3600,
    }
    key = jwt.PyJWK(load_resource("cognitoidp/resources/jwks-private.json"))
    return jwt.encode(claims, key.key, algorithm="RS256", headers={"kid": key.key_id})


def post(base_url: str, token: str, *framing: str, path: str = "/orders") -> bytes:
    """The head of ``POST <stage><path>``, valid but for the framing lines given."""
    url = urlsplit(base_url)
    lines = [
        f"POST {url.path}{path} HTTP/1.1",
        f"Host: {url.netloc}",
        f"Authorization: {token}",
        "Idempotency-Key: raw-http-key-0001",
        "Content-Type: application/json",
        *framing,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(base_url: str, raw: bytes, *, half_close_first: bool = False) -> Exchange:
    """Send ``raw``, read one response, then half-close and read until the server closes."""
    url = urlsplit(base_url)
    assert url.hostname is not None
    assert url.port is not None
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(raw)
        if half_close_first:
            sock.shutdown(socket.SHUT_WR)
        reader = sock.makefile("rb")
        status_line = reader.readline().decode("latin-1").rstrip("\r\n")
        headers: dict[str, str] = {}
        while (line := reader.readline()) not in {b"\r\n", b""}:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers.get("content-length", "0")))
        if not half_close_first:
            sock.shutdown(socket.SHUT_WR)
        after = reader.read()
    return Exchange(status_line, headers, body, after)


def assert_error_shape(body: Any) -> None:
    """The one error body: ``Error`` in docs/openapi.json, and nothing else in it."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/Error", "components": OPENAPI["components"]}
    )
    validator.validate(body)
    assert set(body) == {"message", "reason"}, body


def assert_refused(ex: Exchange, status: int) -> dict[str, Any]:
    """One short error answer in the one shape, and the connection closed after it."""
    assert ex.status == status, ex
    assert ex.headers["content-type"] == "application/json"
    assert len(ex.body) < SHORT, ex.body[:SHORT]
    body: dict[str, Any] = ex.json()
    assert_error_shape(body)
    assert ex.headers["connection"] == "close"
    assert ex.after == b"", "the server answered a second request"
    return body


def nested(depth: int) -> bytes:
    """An order whose ``items`` nests ``depth`` levels deep in all (the body's object is 1)."""
    inner = depth - 1
    return b'{"payment_method": "pm_card_visa", "currency": "EUR", "items": ' + (
        b"[" * inner + b"]" * inner + b"}"
    )


# --------------------------------------------------------------------------- body validation


def test_a_body_nested_100000_levels_deep_is_400_with_a_short_reason(
    gateway: LocalApiGateway, token: str
) -> None:
    """Fails if: the body is parsed before its depth is bounded (RecursionError: no answer)."""
    body = nested(100_000)

    ex = exchange(
        gateway.base_url, post(gateway.base_url, token, f"Content-Length: {len(body)}") + body
    )

    refused = assert_refused(ex, 400)
    assert refused == {
        "message": "Invalid request body",
        "reason": f"[JSON nested deeper than {MAX_JSON_DEPTH} levels]",
    }


def test_a_body_as_deep_as_the_bound_is_validated_against_the_model(
    gateway: LocalApiGateway, token: str
) -> None:
    """The bound only changes the reason: at the bound the model itself refuses the body."""
    body = nested(MAX_JSON_DEPTH)

    ex = exchange(
        gateway.base_url, post(gateway.base_url, token, f"Content-Length: {len(body)}") + body
    )

    refused = assert_refused(ex, 400)
    assert refused["message"] == "Invalid request body"
    assert "is not of type 'object' (at /items/0)" in refused["reason"]


def test_a_7_mb_body_that_fails_validation_is_not_echoed_in_the_reason(
    gateway: LocalApiGateway, token: str
) -> None:
    """Fails if: the reason quotes the offending value whole (it echoed all 7 MB)."""
    body = json.dumps({**ORDER, "currency": "X" * 7 * 1024 * 1024}).encode()

    ex = exchange(
        gateway.base_url, post(gateway.base_url, token, f"Content-Length: {len(body)}") + body
    )

    refused = assert_refused(ex, 400)
    assert refused["message"] == "Invalid request body"
    assert "XXX..." in refused["reason"]
    assert "is not one of ['EUR', 'USD', 'GBP'] (at /currency)" in refused["reason"]


def test_a_body_with_a_million_errors_lists_the_first_few(
    gateway: LocalApiGateway, token: str
) -> None:
    body = json.dumps({**ORDER, "items": [{}] * 1_000_000}).encode()  # 4 MB

    ex = exchange(
        gateway.base_url, post(gateway.base_url, token, f"Content-Length: {len(body)}") + body
    )

    reason = assert_refused(ex, 400)["reason"]
    assert reason.count("(at /items") == MAX_LISTED_ERRORS
    assert reason.endswith(", ...]")


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("value", ["-1", "abc", "1e3", "+2", "0x2", "2 2", "²"])
def test_a_content_length_that_is_not_digits_is_400(
    gateway: LocalApiGateway, token: str, value: str
) -> None:
    """Fails if: -1 waits for the connection to end (it hung), or abc drops the connection."""
    ex = exchange(
        gateway.base_url, post(gateway.base_url, token, f"Content-Length: {value}") + b"{}"
    )

    assert assert_refused(ex, 400) == {"message": "Invalid Content-Length header", "reason": ""}


@pytest.mark.parametrize("second", ["2", "60"], ids=["same value", "different values"])
def test_two_content_length_headers_are_400(
    gateway: LocalApiGateway, token: str, second: str
) -> None:
    """Fails if: one of the two lengths is believed and the rest is read as a second request."""
    smuggled = b"GET /dev/orders/x HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (
        post(gateway.base_url, token, "Content-Length: 2", f"Content-Length: {second}")
        + b"{}"
        + smuggled
    )

    ex = exchange(gateway.base_url, raw)

    assert assert_refused(ex, 400) == {"message": "Duplicate Content-Length header", "reason": ""}


def test_content_length_with_transfer_encoding_is_400(gateway: LocalApiGateway, token: str) -> None:
    raw = (
        post(gateway.base_url, token, "Content-Length: 6", "Transfer-Encoding: chunked")
        + b"0\r\n\r\n"
    )

    ex = exchange(gateway.base_url, raw)

    assert assert_refused(ex, 400) == {
        "message": "Content-Length and Transfer-Encoding are exclusive",
        "reason": "",
    }


def test_a_chunked_body_reaches_the_function_decoded_without_the_header(
    gateway: LocalApiGateway, token: str, function: EchoFunction
) -> None:
    """API Gateway takes a chunked request, hands the function the decoded body and drops
    Transfer-Encoding. Fails if: the chunks are read as a second request (no Content-Length
    meant no body), or the function sees the chunk framing."""
    body = json.dumps(ORDER).encode()
    chunked = (
        b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
        + b"0\r\n\r\n"
    )

    ex = exchange(
        gateway.base_url, post(gateway.base_url, token, "Transfer-Encoding: chunked") + chunked
    )

    assert ex.status == 202, ex
    assert ex.after == b""
    echoed = ex.json()
    assert json.loads(echoed["body"]) == ORDER
    assert "Transfer-Encoding" not in echoed["headers"]


def test_a_malformed_chunked_body_is_400(gateway: LocalApiGateway, token: str) -> None:
    raw = post(gateway.base_url, token, "Transfer-Encoding: chunked") + b"zz\r\n{}\r\n0\r\n\r\n"

    ex = exchange(gateway.base_url, raw)

    assert assert_refused(ex, 400) == {"message": "Malformed chunked body", "reason": ""}


@pytest.mark.parametrize("coding", ["gzip", "gzip, chunked", "identity"])
def test_a_transfer_coding_other_than_chunked_is_400(
    gateway: LocalApiGateway, token: str, coding: str
) -> None:
    raw = post(gateway.base_url, token, f"Transfer-Encoding: {coding}") + b"2\r\n{}\r\n0\r\n\r\n"

    ex = exchange(gateway.base_url, raw)

    assert assert_refused(ex, 400) == {
        "message": "Unsupported Transfer-Encoding: only chunked",
        "reason": "",
    }


def test_a_body_cut_short_is_400(gateway: LocalApiGateway, token: str) -> None:
    raw = post(gateway.base_url, token, "Content-Length: 50") + b"{}"

    ex = exchange(gateway.base_url, raw, half_close_first=True)

    assert assert_refused(ex, 400) == {
        "message": "Request body shorter than its Content-Length",
        "reason": "",
    }


def test_a_stalled_body_is_408_after_the_read_timeout(gateway: LocalApiGateway, token: str) -> None:
    """Fails if: a client that stops sending holds the request (and a thread) forever."""
    started = time.monotonic()

    ex = exchange(gateway.base_url, post(gateway.base_url, token, "Content-Length: 50") + b"{}")

    assert assert_refused(ex, 408) == {"message": "Request body not received in time", "reason": ""}
    assert READ_TIMEOUT_S <= time.monotonic() - started < READ_TIMEOUT_S + 5


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_10_mb_is_413_and_the_rest_is_not_a_request(
    gateway: LocalApiGateway, token: str, chunked: bool
) -> None:
    body = b"x" * (MAX_PAYLOAD_BYTES + 1)
    if chunked:
        raw = post(gateway.base_url, token, "Transfer-Encoding: chunked")
        raw += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        raw = post(gateway.base_url, token, f"Content-Length: {len(body)}") + body

    ex = exchange(gateway.base_url, raw)

    assert assert_refused(ex, 413) == {"message": "Request Too Long", "reason": ""}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("NOT AN HTTP REQUEST LINE AT ALL", "Bad request version ('ALL')"),
        ("GET http://[::1/dev/orders HTTP/1.1", "Invalid request target"),
    ],
)
def test_a_malformed_request_line_is_answered_in_the_error_shape(
    gateway: LocalApiGateway, line: str, message: str
) -> None:
    ex = exchange(gateway.base_url, f"{line}\r\n\r\n".encode())

    assert assert_refused(ex, 400) == {"message": message, "reason": ""}


def test_an_unknown_method_is_routed_like_an_unknown_route(
    gateway: LocalApiGateway, token: str
) -> None:
    """API Gateway answers it 403 Missing Authentication Token, not an HTTP server's 501."""
    url = urlsplit(gateway.base_url)
    raw = f"BREW {url.path}/orders HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode()

    ex = exchange(gateway.base_url, raw)

    assert assert_refused(ex, 403) == {"message": "Missing Authentication Token", "reason": ""}


def test_a_request_pipelined_after_another_is_not_served(
    gateway: LocalApiGateway, token: str, function: EchoFunction
) -> None:
    """One request per connection: the server answers, drains and closes."""
    body = json.dumps(ORDER).encode()
    first = post(gateway.base_url, token, f"Content-Length: {len(body)}") + body
    calls = len(function.events)

    ex = exchange(gateway.base_url, first + first)

    assert ex.status == 202, ex
    assert ex.headers["connection"] == "close"
    assert ex.after == b""
    assert len(function.events) == calls + 1


# --------------------------------------------------------------------------- one error shape


def test_the_gateway_and_the_function_answer_errors_in_one_shape(running: Running) -> None:
    """Through the whole local stack (the synthesized template, the real Api function): every
    refusal, whoever makes it, is ``{"message": str, "reason": str | [field errors]}``.
    API Gateway marks its own answers with x-amzn-ErrorType; the function's have none."""
    base = running.api.base_url
    auth = {"Authorization": running.alice}
    json_body = {"Content-Type": "application/json", **auth}
    order = json.dumps(ORDER)
    key = {"Idempotency-Key": new_key()}
    cases = [
        # by the gateway: the template's GatewayResponses, else API Gateway's defaults
        ("gateway", 401, "POST", "/orders", order, {**key, "Content-Type": "application/json"}),
        ("gateway", 403, "GET", "/nope", "", auth),
        ("gateway", 400, "POST", "/orders", order, json_body),  # no Idempotency-Key
        ("gateway", 400, "POST", "/orders", "{}", {**json_body, **key}),  # against the model
        # by the function: handlers/api.py _error
        ("function", 400, "POST", "/orders", order, {**json_body, "Idempotency-Key": "x"}),
        (  # a body no model covers: the function's own field errors
            "function",
            400,
            "POST",
            "/orders",
            json.dumps({**ORDER, "items": "none"}),
            {**auth, **key, "Content-Type": "text/plain"},
        ),
        ("function", 413, "POST", "/orders", order + " " * 17 * 1024, {**json_body, **key}),
        ("function", 404, "GET", f"/orders/{uuid.uuid4()}", "", auth),
    ]
    for by, status, method, path, body, headers in cases:
        response = running.api.http.request(method, base + path, body=body or None, headers=headers)

        said = (by, status, method, path, response.data[:SHORT])
        assert response.status == status, said
        assert ("x-amzn-ErrorType" in response.headers) == (by == "gateway"), said
        assert_error_shape(json.loads(response.data))
    framing = exchange(base, post(base, running.alice, "Content-Length: abc") + b"{}")
    assert assert_refused(framing, 400) == {
        "message": "Invalid Content-Length header",
        "reason": "",
    }
