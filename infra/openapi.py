"""OpenAPI 3.1 document of the public API, generated from the pydantic models (F11).

``python -m infra.openapi > docs/openapi.json`` regenerates the committed document; a test
fails when the two drift, and another checks that the request body schema is the API Gateway
model of the synthesized template. This module lives in ``infra`` so that nothing in it is
bundled into, or imported by, the Lambda functions.

The response bodies that have no model in ``orders_saga.models`` (the 202 acknowledgement and
the error body) are modelled here, from what ``handlers/api.py`` and the gateway responses
(``infra/api.py`` ``ERROR_TEMPLATE``) really send.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import models_json_schema

FUNCTIONS_DIR = Path(__file__).resolve().parents[1] / "functions"
if str(FUNCTIONS_DIR) not in sys.path:
    sys.path.append(str(FUNCTIONS_DIR))

from orders_saga.models import (  # noqa: E402
    MAX_LINES,
    IdempotencyKey,
    OrderView,
    PlaceOrderRequest,
)

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
# infra/api.py IDEMPOTENCY_HEADER; a test compares it with the synthesized template, so this
# module does not import CDK.
IDEMPOTENCY_HEADER = "Idempotency-Key"
SECURITY_SCHEME = "CognitoIdToken"
REF_TEMPLATE = "#/components/schemas/{model}"


class OrderAccepted(BaseModel):
    """Body of the ``202`` answer to ``POST /orders``."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(json_schema_extra={"format": "uuid"})
    status: Literal["ACCEPTED"]
    status_url: str = Field(
        description="Path of the order on the host the request was sent to, with the stage "
        "or custom-domain base path the request used (also the Location header): GET it for "
        "the order's status",
        pattern=r"^(/[A-Za-z0-9._~-]+)*/orders/[0-9a-f-]{36}$",
    )


class FieldError(BaseModel):
    """One pydantic validation error, as the function reports a body it refuses."""

    type: str
    loc: list[str | int]
    msg: str


class Error(BaseModel):
    """Every 4xx/5xx body: the function's and the gateway's (``ERROR_TEMPLATE``), one shape."""

    message: str
    # Always present: a text from the gateway and most function answers ("" when there is
    # nothing to add), the list of field errors (without the offending values) when the
    # function refuses a body.
    reason: str | list[FieldError] = Field(description="Why the request was refused")


def _components() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [
            (PlaceOrderRequest, "validation"),
            (OrderAccepted, "serialization"),
            (OrderView, "serialization"),
            (Error, "serialization"),
        ],
        ref_template=REF_TEMPLATE,
    )
    defs: dict[str, Any] = schemas["$defs"]
    return dict(sorted(defs.items()))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _json(name: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(name)}},
        **extra,
    }


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    if not retry_after:
        return _json("Error", description)
    headers = {
        "Retry-After": {
            "description": "Seconds to wait before retrying with the same Idempotency-Key",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
    return _json("Error", description, headers=headers)


_UNAUTHORIZED = "No Authorization header, or not a valid, unexpired Cognito Id token"
_UNAVAILABLE = "A dependency is unavailable; retry later (the order may already be accepted)"


def openapi_document() -> dict[str, Any]:
    key_schema: dict[str, Any] = TypeAdapter(IdempotencyKey).json_schema()
    place_order = {
        "operationId": "placeOrder",
        "summary": "Place an order",
        "description": (
            "Accepts the order and starts its saga asynchronously. Idempotent on "
            "(customer, Idempotency-Key): a retry with the same key and body answers the "
            "same order; the same key with another body is 422. "
            f"At most {MAX_LINES} lines."
        ),
        "parameters": [
            {
                "name": IDEMPOTENCY_HEADER,
                "in": "header",
                "required": True,
                "description": "The client's retry key, unique per order and customer",
                "schema": key_schema,
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("PlaceOrderRequest")}},
        },
        "responses": {
            "202": _json(
                "OrderAccepted",
                "Accepted; the saga runs asynchronously",
                headers={
                    "Location": {
                        "description": "The order's status_url",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                },
                links={
                    "GetOrder": {
                        "operationId": "getOrder",
                        "parameters": {"order_id": "$response.body#/order_id"},
                    }
                },
            ),
            "400": _error(
                "Missing or invalid Idempotency-Key, or a body the request model refuses"
            ),
            "401": _error(_UNAUTHORIZED),
            "409": _error("A request with this Idempotency-Key is in progress", retry_after=True),
            "413": _error("Request body too large"),
            "422": _error("Idempotency-Key reused with a different request body"),
            "503": _error(_UNAVAILABLE, retry_after=True),
        },
    }
    get_order = {
        "operationId": "getOrder",
        "summary": "Get one of the caller's orders",
        "parameters": [
            {
                "name": "order_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            }
        ],
        "responses": {
            "200": _json("OrderView", "The order"),
            "401": _error(_UNAUTHORIZED),
            "404": _error("No such order for this customer (another customer's order included)"),
            "503": _error(_UNAVAILABLE, retry_after=True),
        },
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Orders API",
            "version": API_VERSION,
            "description": (
                "Order-processing saga behind API Gateway (REST). Generated by "
                "`python -m infra.openapi` from the pydantic models; do not edit."
            ),
        },
        "servers": [
            {
                "url": "{base_url}",
                "variables": {"base_url": {"default": "http://127.0.0.1:8080/dev"}},
            }
        ],
        "security": [{SECURITY_SCHEME: []}],
        "paths": {
            "/orders": {"post": place_order},
            "/orders/{order_id}": {"get": get_order},
        },
        "components": {
            "schemas": _components(),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": (
                        "The raw Cognito Id token of the user pool (no `Bearer ` prefix), "
                        "as the API Gateway Cognito authorizer accepts it"
                    ),
                }
            },
        },
    }


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
