"""What a client follows and reads back through the local API Gateway (issue 10, findings 10
and 11): the Location it is given works against the host it called, and a failed order says
why with a code and a fixed message while the cause stays with operators."""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from ops.orders_db import load_order
from tests.catalogue.full_stack import RAISE_EXCEPTION, db_fault, fresh_sku
from tests.localstack import Running, new_key


def order(sku: str) -> dict[str, Any]:
    return {
        "items": [{"sku": sku, "quantity": 1}],
        "payment_method": "pm_card_visa",
        "currency": "EUR",
    }


def test_the_location_of_an_accepted_order_resolves_against_the_host_called(
    running: Running,
) -> None:
    """Fails if: Location/status_url leave out the stage (resolved against the host they give
    API Gateway's 403 Missing Authentication Token, here the local gateway's 403)."""
    base = running.api.base_url  # http://127.0.0.1:<port>/dev
    host = base.removesuffix("/dev")
    response = running.api.http.request(
        "POST",
        f"{base}/orders",
        body=json.dumps(order("SKU-PEAR")).encode(),
        headers={
            "Authorization": running.alice,
            "Idempotency-Key": new_key(),
            "Content-Type": "application/json",
        },
    )
    accepted = json.loads(response.data)

    assert response.status == 202
    assert response.headers["Location"] == accepted["status_url"]
    assert accepted["status_url"] == f"/dev/orders/{accepted['order_id']}"
    followed = running.api.http.request(
        "GET", f"{host}{response.headers['Location']}", headers={"Authorization": running.alice}
    )
    assert followed.status == 200
    assert json.loads(followed.data)["order_id"] == accepted["order_id"]


def test_an_order_failed_by_an_unexpected_error_shows_a_code_and_operators_keep_the_cause(
    running: Running,
) -> None:
    """ReserveInventory fails with a plain database error (not a business outcome): the saga
    compensates and fails the order. The customer sees `not_completed` and a fixed message; the
    order row (what `orders-ops saga show` prints) keeps the error and its cause.

    Fails if: GET /orders/{id} returns the stored cause again, or the cause is no longer
    recorded for operators."""
    stack = running.stack
    postgres = stack.postgres
    assert postgres is not None
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=5)
    with db_fault(
        stack,
        table="reservations",
        before="INSERT",
        when=sql.SQL("NEW.sku = {}").format(sql.Literal(sku)),
        sqlstate=RAISE_EXCEPTION,
        message="issue 10 injected: an unexpected database error",
    ):
        status, accepted = running.api.post_order(running.bob, order(sku), new_key())
        assert status == 202, accepted
        final = running.api.wait_terminal(running.bob, accepted["order_id"])

    snapshot = load_order(postgres.conninfo(), accepted["order_id"])

    assert final["status"] == "FAILED"
    assert final["failure_code"] == "not_completed"
    assert final["failure_message"] == (
        "The order could not be completed. Any payment taken has been refunded."
    )
    assert "injected" not in json.dumps(final)
    assert snapshot is not None
    assert "issue 10 injected" in str(snapshot.order["failure_reason"])
