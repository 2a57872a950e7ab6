"""Lambda entry point for the REST API: thin routes over logic/place_order.py (F01, F11).

The gateway already checked the token, the required header and the body model; the function
checks again with pydantic because it must never trust its caller, and answers every bad
input with a 4xx and a reason.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import TypeAdapter, ValidationError

from orders_saga import config
from orders_saga.adapters import orders_repository
from orders_saga.adapters.database import database
from orders_saga.errors import TransientError
from orders_saga.logic import order_failure, place_order
from orders_saga.logic.health_check import health_report, is_health_check
from orders_saga.logic.order_identity import is_order_id
from orders_saga.models import IdempotencyKey, PlaceOrderRequest
from orders_saga.observability import bind_order, logger, metrics, trace_calls_to, tracer

# API Gateway refuses bodies over 10 MB; a real order is well under 8 KB (F11, F21).
MAX_BODY_BYTES = 16 * 1024

trace_calls_to(("botocore",))  # idempotency records, the orders queue
app = APIGatewayRestResolver()
_key_adapter: TypeAdapter[str] = TypeAdapter(IdempotencyKey)


def _error(status: HTTPStatus, message: str, reason: Any = None, **headers: str) -> Response[str]:
    # One error shape with the gateway's own answers (infra/api.py ERROR_TEMPLATE): both keys
    # always, "reason" empty when there is nothing to add (a gateway template cannot omit it).
    body: dict[str, Any] = {"message": message, "reason": "" if reason is None else reason}
    return Response(
        status_code=status.value,
        content_type="application/json",
        body=json.dumps(body, default=str),
        headers=headers or None,
    )


def _customer_id() -> str | None:
    claims = app.current_event.request_context.authorizer.claims or {}
    sub = claims.get("sub")
    return str(sub) if sub else None


@app.post("/orders")
@tracer.capture_method
def post_order() -> Response[str]:
    customer_id = _customer_id()
    if customer_id is None:
        return _error(HTTPStatus.UNAUTHORIZED, "Unauthorized")
    raw_key = app.current_event.headers.get("Idempotency-Key") or ""  # case-insensitive
    try:
        key = _key_adapter.validate_python(raw_key)
    except ValidationError:
        return _error(
            HTTPStatus.BAD_REQUEST,
            "Invalid request",
            "Idempotency-Key header is required: 8-64 characters of A-Z a-z 0-9 _ -",
        )
    body = app.current_event.body or ""
    if len(body.encode()) > MAX_BODY_BYTES:
        return _error(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "Request body too large",
            f"max {MAX_BODY_BYTES} bytes",
        )
    try:
        request = PlaceOrderRequest.model_validate_json(body)
    except ValidationError as error:
        return _error(
            HTTPStatus.BAD_REQUEST,
            "Invalid request body",
            # Without the offending values: never echo a client's data back (issue 13).
            error.errors(include_url=False, include_context=False, include_input=False),
        )
    try:
        accepted = place_order.accept(customer_id, key, request)
    except IdempotencyValidationError:
        return _error(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "Idempotency-Key reused with a different request body",
            "send a new Idempotency-Key for a different order",
        )
    except IdempotencyAlreadyInProgressError:
        return _error(
            HTTPStatus.CONFLICT,
            "A request with this Idempotency-Key is in progress",
            None,
            **{"Retry-After": "1"},
        )
    accepted = {**accepted, "status_url": _as_called(accepted["status_url"])}
    return Response(
        status_code=HTTPStatus.ACCEPTED.value,
        content_type="application/json",
        body=json.dumps(accepted),
        headers={"Location": accepted["status_url"]},
    )


def _as_called(resource_path: str) -> str:
    """``resource_path`` as the client addresses it (issue 10, finding 11).

    API Gateway hands the function the resource path (``/orders``) and, in
    ``requestContext.path``, the path the client called: ``/dev/orders`` on the execute-api
    host, ``/<base path>/orders`` on a custom domain. The difference is the prefix a link must
    keep, or it resolves to 403 Missing Authentication Token. The idempotent response itself
    keeps the bare resource path, so a replay through another host or stage stays right.
    """
    event = app.current_event
    called, own = event.request_context.path or "", event.path or ""
    prefix = called[: -len(own)] if own and called.endswith(own) else ""
    return f"{prefix}{resource_path}"


@app.get("/orders/<order_id>")
@tracer.capture_method
def get_order(order_id: str) -> Response[str]:
    customer_id = _customer_id()
    if customer_id is None:
        return _error(HTTPStatus.UNAUTHORIZED, "Unauthorized")
    # Another customer's order is indistinguishable from a missing one: 404 either way.
    if not is_order_id(order_id):
        return _error(HTTPStatus.NOT_FOUND, "Order not found")
    bind_order(order_id)
    record = database().run(
        lambda conn: orders_repository.get_order_for_customer(conn, order_id, customer_id)
    )
    if record is None:
        return _error(HTTPStatus.NOT_FOUND, "Order not found")
    return Response(
        status_code=HTTPStatus.OK.value,
        content_type="application/json",
        # A reason code and a fixed message; the cause stays with operators (finding 10).
        body=order_failure.public_view(record).model_dump_json(),
    )


@app.exception_handler(TransientError)  # type: ignore[untyped-decorator]
def transient(error: TransientError) -> Response[str]:
    logger.warning("dependency unavailable", extra={"error": str(error)})
    return _error(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "Temporarily unavailable, retry with the same Idempotency-Key",
        None,
        **{"Retry-After": "2"},
    )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # F12: the pre-traffic hook's dry run of a new version: configuration only, no database,
    # no queue, no idempotency record (logic/health_check.py).
    if is_health_check(event):
        return health_report(
            "api", (config.idempotency_table, config.orders_queue_url, config.database_settings)
        )
    place_order.place_order_idempotency.register_lambda_context(context)
    return app.resolve(event, context)
