"""The order's rows in PostgreSQL, read-only, for ``saga show`` and the redrive decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from ops.masking import mask_value

# An operator's read: fail fast when the database is the thing that is down (F07).
CONNECT_TIMEOUT_S: Final = 5
STATEMENT_TIMEOUT_MS: Final = 5000


@dataclass(frozen=True)
class OrderSnapshot:
    order: dict[str, Any]
    reservations: list[dict[str, Any]] = field(default_factory=list)
    payment: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.order["status"])

    @property
    def payment_status(self) -> str | None:
        return None if self.payment is None else str(self.payment["status"])


def load_order(dsn: str, order_id: str) -> OrderSnapshot | None:
    # No startup `options`: RDS Proxy refuses them (issue 10). No prepared statements: they
    # would pin a proxy connection. The bound is SET LOCAL, so it ends with this transaction
    # and cannot leak to a pooled server connection.
    with psycopg.connect(
        dsn, connect_timeout=CONNECT_TIMEOUT_S, row_factory=dict_row, prepare_threshold=None
    ) as conn:
        # Belt and braces: this tool never writes to the orders database.
        conn.read_only = True
        conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
        order = conn.execute(
            "SELECT order_id::text, customer_id, status, currency, amount_cents, items,"
            " failure_reason, created_at, updated_at FROM orders WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        if order is None:
            return None
        reservations = conn.execute(
            "SELECT sku, quantity, unit_price_cents, reserved_at, released_at"
            " FROM reservations WHERE order_id = %s ORDER BY sku",
            (order_id,),
        ).fetchall()
        payment = conn.execute(
            "SELECT status, charge_id, amount_cents, currency, refund_id, charged_at,"
            " refunded_at FROM payments WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        events = conn.execute(
            "SELECT event_id, event, detail, at FROM order_events"
            " WHERE order_id = %s ORDER BY event_id",
            (order_id,),
        ).fetchall()
    return OrderSnapshot(
        order=dict(order),
        reservations=[dict(r) for r in reservations],
        payment=None if payment is None else dict(payment),
        events=[{**e, "detail": mask_value(e["detail"])} for e in events],
    )
