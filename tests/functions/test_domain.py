"""Pure domain rules: order identity, message versions, the API schema (no AWS, no database)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft4Validator
from orders_saga.api_schema import place_order_json_schema
from orders_saga.logic.order_identity import execution_name_for, is_order_id, order_id_for
from orders_saga.models import OrderAccepted, OrderAcceptedV1, PlaceOrderRequest
from pydantic import TypeAdapter, ValidationError

VALID_ORDER = {
    "items": [{"sku": "SKU-APPLE", "quantity": 2}],
    "payment_method": "pm_card_visa",
    "currency": "EUR",
}


def test_order_id_is_deterministic_per_customer_and_key() -> None:
    first = order_id_for("customer-a", "key-00000001")
    assert first == order_id_for("customer-a", "key-00000001")
    assert first != order_id_for("customer-b", "key-00000001")
    assert first != order_id_for("customer-a", "key-00000002")
    assert is_order_id(first)


def test_execution_name_fits_step_functions_limit() -> None:
    name = execution_name_for(order_id_for("c", "k" * 64))
    assert len(name) <= 80
    assert name.startswith("order-")


def test_previous_message_version_is_still_accepted_as_eur() -> None:
    message = TypeAdapter(OrderAccepted).validate_json(
        '{"schema_version": "1", "order_id": "0f8fad5b-d9cb-469f-a165-70867728950e",'
        ' "customer_id": "c",'
        ' "items": [{"sku": "SKU-APPLE", "quantity": 1}], "payment_method": "pm_card_visa",'
        ' "accepted_at": "2026-01-01T00:00:00Z"}'
    )
    assert isinstance(message, OrderAcceptedV1)
    assert message.to_order().currency == "EUR"


def test_unknown_message_version_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(OrderAccepted).validate_python({"schema_version": "3", "order_id": "o"})


BODIES: list[tuple[str, Any, bool]] = [
    ("valid", VALID_ORDER, True),
    ("missing items", {k: v for k, v in VALID_ORDER.items() if k != "items"}, False),
    ("empty items", {**VALID_ORDER, "items": []}, False),
    ("too many lines", {**VALID_ORDER, "items": [{"sku": "SKU-APPLE", "quantity": 1}] * 21}, False),
    ("quantity zero", {**VALID_ORDER, "items": [{"sku": "SKU-APPLE", "quantity": 0}]}, False),
    ("quantity too big", {**VALID_ORDER, "items": [{"sku": "SKU-APPLE", "quantity": 11}]}, False),
    (
        "quantity as string",
        {**VALID_ORDER, "items": [{"sku": "SKU-APPLE", "quantity": "2"}]},
        False,
    ),
    ("lowercase sku", {**VALID_ORDER, "items": [{"sku": "apple", "quantity": 1}]}, False),
    ("unknown currency", {**VALID_ORDER, "currency": "BTC"}, False),
    ("bad payment method", {**VALID_ORDER, "payment_method": "visa"}, False),
    ("unknown field", {**VALID_ORDER, "coupon": "FREE"}, False),
    ("not an object", ["SKU-APPLE"], False),
]


@pytest.mark.parametrize(("case", "body", "valid"), BODIES, ids=[b[0] for b in BODIES])
def test_gateway_model_and_pydantic_agree(case: str, body: Any, valid: bool) -> None:
    """The API Gateway model is generated from pydantic; both must judge every body alike."""
    schema = place_order_json_schema()
    Draft4Validator.check_schema(schema)
    gateway_ok = Draft4Validator(schema).is_valid(body)
    try:
        PlaceOrderRequest.model_validate(body, strict=True)
        pydantic_ok = True
    except ValidationError:
        pydantic_ok = False
    assert (gateway_ok, pydantic_ok) == (valid, valid), case


def test_gateway_model_has_no_references() -> None:
    assert "$ref" not in str(place_order_json_schema())
