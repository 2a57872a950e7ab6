"""Orders, inventory and payments SQL against the real PostgreSQL (F01, F10)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg
import pytest
from orders_saga.adapters import orders_repository as repo
from orders_saga.errors import OutOfStock
from orders_saga.models import Order, OrderLine

from devstack.postgres import PostgresSettings

T = TypeVar("T")


def make_order(order_id: str, *lines: tuple[str, int]) -> Order:
    return Order(
        order_id=order_id,
        customer_id="customer-1",
        items=[OrderLine(sku=sku, quantity=qty) for sku, qty in lines],
        payment_method="pm_card_visa",
        currency="EUR",
    )


def in_tx(settings: PostgresSettings, work: Callable[[psycopg.Connection], T]) -> T:
    with psycopg.connect(settings.conninfo()) as conn, conn.transaction():
        return work(conn)


def available(db: psycopg.Connection, sku: str) -> int:
    row = db.execute("SELECT available FROM inventory WHERE sku = %s", (sku,)).fetchone()
    assert row is not None
    return int(row[0])


ORDER_1 = "00000000-0000-4000-8000-000000000001"
ORDER_2 = "00000000-0000-4000-8000-000000000002"


def test_reservation_takes_stock_and_prices_the_order(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-APPLE", 2), ("SKU-PEAR", 1), ("SKU-APPLE", 1))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))

    reservation = in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))

    assert reservation.amount_cents == 3 * 120 + 150
    assert available(db, "SKU-APPLE") == 997
    assert available(db, "SKU-PEAR") == 999


def test_repeated_reservation_takes_stock_once(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-APPLE", 2))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))

    first = in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))
    second = in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))

    assert first == second
    assert available(db, "SKU-APPLE") == 998


def test_out_of_stock_changes_nothing(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-APPLE", 2), ("SKU-SOLD-OUT", 1))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))

    with pytest.raises(OutOfStock):
        in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))

    assert available(db, "SKU-APPLE") == 1000
    assert db.execute("SELECT count(*) FROM reservations").fetchone() == (0,)


def test_release_gives_stock_back_once(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-PEAR", 3))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))
    in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))

    released = [
        in_tx(migrated_postgres, lambda c: repo.release_inventory(c, ORDER_1)) for _ in range(3)
    ]

    assert released == [3, 0, 0]
    assert available(db, "SKU-PEAR") == 1000


def test_two_orders_racing_for_the_last_unit_never_oversell(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    """Given one unit left, when two orders reserve it at the same time, exactly one wins (F10)."""
    orders = [make_order(oid, ("SKU-LAST-ONE", 1)) for oid in (ORDER_1, ORDER_2)]
    with psycopg.connect(migrated_postgres.conninfo()) as conn:
        for order in orders:
            repo.insert_received_order(conn, order)
    barrier = threading.Barrier(len(orders))
    outcomes: list[str] = []

    def race(order: Order) -> None:
        barrier.wait()
        try:
            in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))
            outcomes.append("reserved")
        except OutOfStock:
            outcomes.append("out of stock")

    threads = [threading.Thread(target=race, args=(o,)) for o in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["out of stock", "reserved"]
    assert available(db, "SKU-LAST-ONE") == 0


def test_inventory_cannot_go_negative_even_by_direct_sql(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("UPDATE inventory SET available = available - 1 WHERE sku = 'SKU-SOLD-OUT'")


def test_a_charge_is_recorded_once(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-APPLE", 1))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))
    in_tx(migrated_postgres, lambda c: repo.reserve_inventory(c, order))

    for _ in range(2):
        in_tx(
            migrated_postgres,
            lambda c: repo.record_charge(
                c,
                order_id=ORDER_1,
                idempotency_key="k",
                charge_id="ch_1",
                amount_cents=120,
                currency="EUR",
            ),
        )
    with pytest.raises(RuntimeError, match="different charge"):
        in_tx(
            migrated_postgres,
            lambda c: repo.record_charge(
                c,
                order_id=ORDER_1,
                idempotency_key="k",
                charge_id="ch_2",
                amount_cents=120,
                currency="EUR",
            ),
        )

    assert db.execute("SELECT count(*), min(status) FROM payments").fetchone() == (1, "CHARGED")


def test_a_confirmed_order_is_never_marked_failed(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-APPLE", 1))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))
    db.execute("UPDATE orders SET status = 'CONFIRMED'")

    with pytest.raises(RuntimeError, match="CONFIRMED"):
        in_tx(migrated_postgres, lambda c: repo.mark_failed(c, ORDER_1, "late failure"))


def test_a_customer_sees_only_their_own_orders(
    db: psycopg.Connection, migrated_postgres: PostgresSettings
) -> None:
    order = make_order(ORDER_1, ("SKU-APPLE", 1))
    in_tx(migrated_postgres, lambda c: repo.insert_received_order(c, order))

    mine = in_tx(migrated_postgres, lambda c: repo.get_order_for_customer(c, ORDER_1, "customer-1"))
    theirs = in_tx(
        migrated_postgres, lambda c: repo.get_order_for_customer(c, ORDER_1, "customer-2")
    )

    assert mine is not None
    assert mine.status == "RECEIVED"
    assert theirs is None
