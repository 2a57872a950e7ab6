"""Pydantic models for every boundary: API body, queue message, saga state (F11, F18)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Bounds are part of the contract (F11, F21): the API Gateway model is generated from these
# models (api_schema.py), so the edge and the function reject the same inputs.
MAX_LINES = 20
MAX_QUANTITY = 10

Sku = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$")]
PaymentMethod = Annotated[str, StringConstraints(pattern=r"^pm_[a-z0-9_]{1,40}$")]
Currency = Literal["EUR", "USD", "GBP"]
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
# Identities are bounded too (F02, F11): an order id PostgreSQL's uuid column cannot store, or a
# customer id big enough to push the execution input past Step Functions' 256 KB, would pass
# validation and then fail on every delivery (a retry loop instead of the DLQ with a reason).
# Order ids are the canonical form order_id_for() produces; customer ids are Cognito subs.
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
OrderId = Annotated[str, StringConstraints(pattern=rf"^{_UUID}$")]
CustomerId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]

CURRENT_SCHEMA_VERSION = "2"


class _Strict(BaseModel):
    # strict: "2" is not a quantity; the gateway model (draft 4) would refuse it too.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class OrderLine(_Strict):
    sku: Sku
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class PlaceOrderRequest(_Strict):
    """Body of ``POST /orders``."""

    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    payment_method: PaymentMethod
    currency: Currency


class Order(_Strict):
    """The order as the saga sees it (the execution input's ``order``)."""

    order_id: OrderId
    customer_id: CustomerId
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    payment_method: PaymentMethod
    currency: Currency


class OrderAcceptedV1(_Strict):
    """Previous message version: no currency field, every order was in EUR (F18)."""

    schema_version: Literal["1"]
    order_id: OrderId
    customer_id: CustomerId
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    payment_method: PaymentMethod
    accepted_at: datetime

    def to_order(self) -> Order:
        return Order(
            order_id=self.order_id,
            customer_id=self.customer_id,
            items=self.items,
            payment_method=self.payment_method,
            currency="EUR",
        )


class OrderAcceptedV2(_Strict):
    """Current message version, written by the API function."""

    schema_version: Literal["2"]
    order_id: OrderId
    customer_id: CustomerId
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_LINES)
    payment_method: PaymentMethod
    currency: Currency
    accepted_at: datetime

    @classmethod
    def for_order(cls, order: Order) -> OrderAcceptedV2:
        return cls(
            schema_version="2",
            accepted_at=datetime.now(UTC),
            **order.model_dump(),
        )

    def to_order(self) -> Order:
        return Order.model_validate(self.model_dump(exclude={"schema_version", "accepted_at"}))


OrderAccepted = Annotated[OrderAcceptedV1 | OrderAcceptedV2, Field(discriminator="schema_version")]


class ReservedLine(_Strict):
    sku: str
    quantity: int
    unit_price_cents: int


class Reservation(_Strict):
    amount_cents: int
    currency: Currency
    lines: list[ReservedLine]


class PaymentReceipt(_Strict):
    charge_id: str
    amount_cents: int


class SagaState(BaseModel):
    """What a saga task receives: the order plus the results of earlier steps."""

    model_config = ConfigDict(extra="allow", frozen=True)

    order: Order
    reservation: Reservation | None = None
    payment: PaymentReceipt | None = None
    error: dict[str, str] | None = None

    def failure_reason(self) -> str:
        if not self.error:
            return "unknown"
        return f"{self.error.get('Error', 'unknown')}: {self.error.get('Cause', '')}"[:500]


class OrderRecord(BaseModel):
    """An order row as the repository reads it, ``failure_reason`` (the saga's error and cause,
    for operators) included: never sent to a customer as it is (issue 10, finding 10)."""

    order_id: str
    status: str
    items: list[OrderLine]
    currency: str
    amount_cents: int | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


class FailureCode(StrEnum):
    """Why an order failed, as a customer may see it: stable codes, documented in the API."""

    OUT_OF_STOCK = "out_of_stock"
    PAYMENT_DECLINED = "payment_declined"
    # Anything else (a timeout, a bug, a dependency down after every retry): no details.
    NOT_COMPLETED = "not_completed"


class OrderView(BaseModel):
    """Body of ``GET /orders/{order_id}``: a failed order says why with a stable code and a
    fixed message; the cause stays in the logs, the execution history and the order row."""

    order_id: str
    status: str
    items: list[OrderLine]
    currency: str
    amount_cents: int | None
    failure_code: FailureCode | None
    failure_message: str | None
    created_at: datetime
    updated_at: datetime
