"""SQL for orders, inventory and payments. Every write is idempotent on its own (F01, F10).

Functions take an open connection inside a transaction (``Database.run``) so a step's writes
commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from orders_saga.errors import OutOfStock
from orders_saga.models import Order, OrderRecord, Reservation, ReservedLine

TERMINAL_STATUSES = ("CONFIRMED", "FAILED")

# F10: the condition makes a racing reservation take nothing instead of overselling; the
# inventory CHECK (available >= 0) is the second guard. One statement, so the local run can
# show what each guard is worth (devstack/ablations.py).
TAKE_STOCK = (
    "UPDATE inventory SET available = available - %(quantity)s"
    " WHERE sku = %(sku)s AND available >= %(quantity)s RETURNING unit_price_cents"
)


@dataclass(frozen=True)
class PaymentRecord:
    order_id: str
    charge_id: str
    amount_cents: int
    status: str
    refund_id: str | None


def _event(conn: psycopg.Connection, order_id: str, event: str, detail: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO order_events (order_id, event, detail) VALUES (%s, %s, %s)",
        (order_id, event, Jsonb(detail)),
    )


def insert_received_order(conn: psycopg.Connection, order: Order) -> bool:
    """Record a newly accepted order; False when it already exists (a retried request)."""
    row = conn.execute(
        "INSERT INTO orders (order_id, customer_id, status, items, payment_method, currency)"
        " VALUES (%s, %s, 'RECEIVED', %s, %s, %s) ON CONFLICT (order_id) DO NOTHING"
        " RETURNING order_id",
        (
            order.order_id,
            order.customer_id,
            Jsonb([line.model_dump() for line in order.items]),
            order.payment_method,
            order.currency,
        ),
    ).fetchone()
    if row is None:
        return False
    _event(conn, order.order_id, "RECEIVED", {})
    return True


def get_order_for_customer(
    conn: psycopg.Connection, order_id: str, customer_id: str
) -> OrderRecord | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT order_id::text, status, items, currency, amount_cents, failure_reason,"
            " created_at, updated_at FROM orders WHERE order_id = %s AND customer_id = %s",
            (order_id, customer_id),
        ).fetchone()
    return OrderRecord.model_validate(row) if row else None


def _lock_order(conn: psycopg.Connection, order_id: str) -> str:
    """Serialise every step of one order on its row (F10); returns its status."""
    row = conn.execute(
        "SELECT status FROM orders WHERE order_id = %s FOR UPDATE", (order_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"order {order_id} does not exist")
    return str(row[0])


def _existing_reservation(
    conn: psycopg.Connection, order_id: str, currency: str
) -> Reservation | None:
    rows = conn.execute(
        "SELECT sku, quantity, unit_price_cents FROM reservations"
        " WHERE order_id = %s AND released_at IS NULL ORDER BY sku",
        (order_id,),
    ).fetchall()
    if not rows:
        return None
    lines = [ReservedLine(sku=r[0], quantity=r[1], unit_price_cents=r[2]) for r in rows]
    amount = sum(line.quantity * line.unit_price_cents for line in lines)
    return Reservation(amount_cents=amount, currency=currency, lines=lines)  # type: ignore[arg-type]


def reserve_inventory(conn: psycopg.Connection, order: Order) -> Reservation:
    """Take stock for every line, all or nothing; raises OutOfStock without any change."""
    _lock_order(conn, order.order_id)
    existing = _existing_reservation(conn, order.order_id, order.currency)
    if existing is not None:
        return existing  # a retried step: the first attempt already committed (F01)
    # Sum quantities per SKU and lock rows in SKU order so concurrent orders never deadlock.
    wanted: dict[str, int] = {}
    for line in order.items:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    lines: list[ReservedLine] = []
    for sku in sorted(wanted):
        row = conn.execute(TAKE_STOCK, {"sku": sku, "quantity": wanted[sku]}).fetchone()
        if row is None:
            raise OutOfStock(f"not enough stock for {sku} (wanted {wanted[sku]})")
        lines.append(ReservedLine(sku=sku, quantity=wanted[sku], unit_price_cents=row[0]))
    conn.cursor().executemany(
        "INSERT INTO reservations (order_id, sku, quantity, unit_price_cents)"
        " VALUES (%s, %s, %s, %s)",
        [(order.order_id, line.sku, line.quantity, line.unit_price_cents) for line in lines],
    )
    amount = sum(line.quantity * line.unit_price_cents for line in lines)
    conn.execute(
        "UPDATE orders SET status = 'RESERVED', amount_cents = %s, updated_at = now()"
        " WHERE order_id = %s",
        (amount, order.order_id),
    )
    _event(conn, order.order_id, "RESERVED", {"amount_cents": amount})
    return Reservation(amount_cents=amount, currency=order.currency, lines=lines)


def release_inventory(conn: psycopg.Connection, order_id: str) -> int:
    """Give back every unreleased reservation of the order; returns units released (0 on repeat)."""
    _lock_order(conn, order_id)
    rows = conn.execute(
        "UPDATE reservations SET released_at = now()"
        " WHERE order_id = %s AND released_at IS NULL RETURNING sku, quantity",
        (order_id,),
    ).fetchall()
    for sku, quantity in sorted(rows):
        conn.execute(
            "UPDATE inventory SET available = available + %s WHERE sku = %s", (quantity, sku)
        )
    units = sum(int(quantity) for _, quantity in rows)
    if rows:
        _event(conn, order_id, "INVENTORY_RELEASED", {"units": units})
    return units


def get_payment(conn: psycopg.Connection, order_id: str) -> PaymentRecord | None:
    row = conn.execute(
        "SELECT order_id::text, charge_id, amount_cents, status, refund_id FROM payments"
        " WHERE order_id = %s",
        (order_id,),
    ).fetchone()
    return PaymentRecord(*row) if row else None


def record_charge(
    conn: psycopg.Connection,
    *,
    order_id: str,
    idempotency_key: str,
    charge_id: str,
    amount_cents: int,
    currency: str,
) -> PaymentRecord:
    """Store the provider's charge once; a repeat with the same charge is a no-op (F09)."""
    _lock_order(conn, order_id)
    inserted = conn.execute(
        "INSERT INTO payments"
        " (order_id, idempotency_key, charge_id, amount_cents, currency, status)"
        " VALUES (%s, %s, %s, %s, %s, 'CHARGED') ON CONFLICT (order_id) DO NOTHING"
        " RETURNING order_id",
        (order_id, idempotency_key, charge_id, amount_cents, currency),
    ).fetchone()
    record = get_payment(conn, order_id)
    if record is None or record.charge_id != charge_id:
        raise RuntimeError(f"order {order_id} already has a different charge: {record}")
    conn.execute(
        "UPDATE orders SET status = 'PAID', updated_at = now()"
        " WHERE order_id = %s AND status = 'RESERVED'",
        (order_id,),
    )
    if inserted is not None:
        # Only the first recording is history: a step re-run (a retry after a crash past this
        # commit, or an overlapping attempt) must not log a second PAID (F01, F10).
        _event(conn, order_id, "PAID", {"charge_id": charge_id, "amount_cents": amount_cents})
    return record


def record_refund(conn: psycopg.Connection, order_id: str, refund_id: str) -> None:
    """Mark the charge refunded once; a repeat (an overlapping or retried attempt that got the
    same refund from the provider) changes nothing and logs no second REFUNDED (F01, F10)."""
    _lock_order(conn, order_id)
    refunded = conn.execute(
        "UPDATE payments SET status = 'REFUNDED', refund_id = %s, refunded_at = now()"
        " WHERE order_id = %s AND status = 'CHARGED' RETURNING order_id",
        (refund_id, order_id),
    ).fetchone()
    if refunded is not None:
        _event(conn, order_id, "REFUNDED", {"refund_id": refund_id})


def confirm_order(conn: psycopg.Connection, order_id: str) -> str:
    status = _lock_order(conn, order_id)
    if status == "CONFIRMED":
        return status
    if status != "PAID":
        raise RuntimeError(f"order {order_id} cannot be confirmed from {status}")
    conn.execute(
        "UPDATE orders SET status = 'CONFIRMED', updated_at = now() WHERE order_id = %s",
        (order_id,),
    )
    _event(conn, order_id, "CONFIRMED", {})
    return "CONFIRMED"


def mark_failed(conn: psycopg.Connection, order_id: str, reason: str) -> str:
    status = _lock_order(conn, order_id)
    if status == "FAILED":
        return status
    if status == "CONFIRMED":
        # Never unwind a confirmed order silently: this is a bug the saga must surface.
        raise RuntimeError(f"order {order_id} is CONFIRMED and cannot be marked failed")
    conn.execute(
        "UPDATE orders SET status = 'FAILED', failure_reason = %s, updated_at = now()"
        " WHERE order_id = %s",
        (reason, order_id),
    )
    _event(conn, order_id, "FAILED", {"reason": reason})
    return "FAILED"
