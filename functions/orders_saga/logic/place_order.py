"""Accept an order: the API's only side effects, idempotent on (customer, Idempotency-Key)."""

from __future__ import annotations

from typing import Any

from orders_saga import config
from orders_saga.adapters import orders_repository
from orders_saga.adapters.database import database
from orders_saga.adapters.messaging import publish_order_accepted
from orders_saga.idempotency import idempotency_config, idempotent
from orders_saga.logic.order_identity import order_id_for
from orders_saga.models import Order, OrderAcceptedV2, PlaceOrderRequest
from orders_saga.observability import bind_order, logger, metrics

# The key is the pair the order id is derived from; the payload check makes a reused key with
# a different body an error (422) instead of a silent replay of another order (F01).
place_order_idempotency = idempotency_config(
    key="[customer_id, idempotency_key]", payload="request"
)


def accept(customer_id: str, idempotency_key: str, request: PlaceOrderRequest) -> dict[str, Any]:
    order_id = order_id_for(customer_id, idempotency_key)
    bind_order(order_id)
    command = {
        "customer_id": customer_id,
        "idempotency_key": idempotency_key,
        "order_id": order_id,
        "request": request.model_dump(mode="json"),
    }
    return _accept_once(command=command)


@idempotent(
    data_keyword_argument="command", config=place_order_idempotency, key_prefix="place_order"
)
def _accept_once(command: dict[str, Any]) -> dict[str, Any]:
    request = PlaceOrderRequest.model_validate(command["request"])
    order = Order(
        order_id=command["order_id"],
        customer_id=command["customer_id"],
        items=request.items,
        payment_method=request.payment_method,
        currency=request.currency,
    )
    # Row first, then message: a crash between them is retried by the client with the same
    # key, and both writes are idempotent (ON CONFLICT, and the intake dedupes on order id).
    created = database().run(lambda conn: orders_repository.insert_received_order(conn, order))
    publish_order_accepted(config.orders_queue_url(), OrderAcceptedV2.for_order(order))
    metrics.add_metric(name="OrdersAccepted", unit="Count", value=1)
    logger.info("order accepted", extra={"new_order": created})
    return {
        "order_id": order.order_id,
        "status": "ACCEPTED",
        "status_url": f"/orders/{order.order_id}",
    }
