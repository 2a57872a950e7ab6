"""F10 Overlapping executions for the same entity race each other.

Two races, both on the full local stack:
- different orders racing for the last unit of a SKU: the conditional stock update and
  ``CHECK (available >= 0)`` let exactly one win, the others fail out of stock, no oversell;
- the same order's step racing itself in two execution environments (two worker processes,
  as two overlapping Step Functions attempts would run): both run (the steps keep no
  idempotency record, ADR 0012); the order-row lock serialises their database writes, the
  second finds the first one's result, and the provider deduplicates the charge or refund on
  the order's key. Side effects happen once.
"""

from __future__ import annotations

import threading
import time
import uuid
from functools import partial
from typing import Any

import psycopg
import pytest
from orders_saga.models import Order

from devstack.lambda_runtime import InvokeResult
from tests.catalogue.full_stack import (
    Client,
    at_once,
    available,
    charges,
    count,
    events,
    fresh_sku,
    insert_received_order,
    log_lines,
    order_body,
    refunds,
    reservations,
    two_environments,
    wait_terminal,
)
from tests.localstack import Running

STEP_DONE = "saga step done"
# Backends of this database waiting for a lock: the racers queued behind the order row.
LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


class StockSampler:
    """Reads one SKU's stock as often as it can while a race runs."""

    def __init__(self, running: Running, sku: str) -> None:
        self.running, self.sku = running, sku
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with self.running.stack.db() as conn:
            while not self._stop.is_set():
                self.seen.append(available(conn, self.sku))
                self._stop.wait(0.005)

    def __enter__(self) -> StockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.parametrize("racers", [2, 5])
def test_f10_orders_racing_for_the_last_unit_sell_it_once(running: Running, racers: int) -> None:
    """Given a SKU with one unit left, when `racers` customers order it at the same moment,
    then exactly one order is CONFIRMED and charged, every other one is FAILED out of stock
    and charged nothing, the stock ends at 0 and was never seen below 0 while they raced.

    Fails if: repo.reserve_inventory stops updating stock conditionally (`available >= %s`)
    *and* the `CHECK (available >= 0)` constraint is dropped (oversell), or an out-of-stock
    loser is charged or confirmed.
    """
    stack = running.stack
    with stack.db() as conn:
        sku = fresh_sku(conn, stock=1)
    client = Client(running, size=racers)
    tokens = [running.alice if i % 2 else running.bob for i in range(racers)]

    with StockSampler(running, sku) as stock:
        answers: list[Any] = at_once(
            [
                partial(client.post, token, order_body((sku, 1)), f"f10-{uuid.uuid4().hex}")
                for token in tokens
            ]
        )
        order_ids = [body["order_id"] for _, body in answers]
        with stack.db() as conn:
            statuses = wait_terminal(conn, order_ids)
    with stack.db() as conn:
        reasons = dict(
            conn.execute(
                "SELECT order_id::text, failure_reason FROM orders"
                " WHERE order_id = ANY(%s::uuid[]) AND status = 'FAILED'",
                (order_ids,),
            ).fetchall()
        )
        held = count(
            conn,
            "SELECT count(*) FROM reservations WHERE sku = %s AND released_at IS NULL",
            sku,
        )
        left = available(conn, sku)

    assert [status for status, _ in answers] == [202] * racers
    assert sorted(statuses.values()) == ["CONFIRMED"] + ["FAILED"] * (racers - 1)
    assert all(str(reason).startswith("OutOfStock") for reason in reasons.values()), reasons
    assert [charges(running, o) for o in order_ids].count(1) == 1
    assert sum(charges(running, o) for o in order_ids) == 1
    assert sum(refunds(running, o) for o in order_ids) == 0
    assert (left, held) == (0, 1)
    assert stock.seen
    assert min(stock.seen) >= 0
    assert set(stock.seen) <= {0, 1}


@pytest.fixture
def received_order(running: Running) -> tuple[Order, str]:
    """An order as the Api records it (RECEIVED, no saga started), for a step to race on."""
    with running.stack.db() as conn:
        sku = fresh_sku(conn, stock=10)
    return insert_received_order(running, sku, 2), sku


def race_in_two_environments(
    running: Running, handler_module: str, state: dict[str, Any]
) -> tuple[list[InvokeResult], int]:
    """Invoke the step in two environments at once while the order row is locked, so both
    attempts overlap for sure; release the lock once both are seen queued behind it.
    Returns the two results and how many attempts were seen waiting for the lock."""
    first, second = two_environments(running.stack, handler_module)
    results: list[InvokeResult] = []
    postgres = running.stack.postgres
    assert postgres is not None
    order_id = state["order"]["order_id"]
    waiting = 0
    with psycopg.connect(postgres.conninfo()) as blocker:
        blocker.execute("SELECT 1 FROM orders WHERE order_id = %s FOR UPDATE", (order_id,))
        threads = [
            threading.Thread(target=lambda w=worker: results.append(w.invoke(state)))
            for worker in (first, second)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 4  # under the 5 s statement timeout the racers wait in
        with psycopg.connect(postgres.conninfo(), autocommit=True) as observer:
            while time.monotonic() < deadline and waiting < 2:
                waiting = int(observer.execute(LOCK_WAITERS).fetchone()[0])  # type: ignore[index]
                time.sleep(0.02)
        blocker.commit()  # the racers' locked statements proceed, one after the other
    for thread in threads:
        thread.join(timeout=30)
    return results, waiting


def test_f10_the_same_reservation_racing_itself_in_two_environments_reserves_once(
    running: Running, received_order: tuple[Order, str]
) -> None:
    """Given an order in RECEIVED, when ReserveInventory runs for it in two environments at
    the same moment (two overlapping attempts, both queued behind the order row's lock), then
    both succeed with the same reservation: the first takes the stock, the second finds the
    reservation and returns it. The stock is taken once, one reservation row and one RESERVED
    event exist.

    Fails if: repo.reserve_inventory stops locking the order row (both would read "no
    reservation" and take stock twice) or stops returning the existing reservation (the second
    would take stock again, or fail).
    """
    order, sku = received_order
    state = {"order": order.model_dump(mode="json")}

    results, waiting = race_in_two_environments(running, "reserve_inventory", state)

    with running.stack.db() as conn:
        stock, rows, history = (
            available(conn, sku),
            reservations(conn, order.order_id),
            events(conn, order.order_id),
        )
    done = log_lines(running, message=STEP_DONE, order_id=order.order_id)
    assert waiting == 2  # both attempts really overlapped on the order row
    assert [r.errored for r in results] == [False, False], [r.payload for r in results]
    assert results[0].json() == results[1].json()
    assert results[0].json()["amount_cents"] == 2 * 500
    assert (stock, rows, history["RESERVED"]) == (10 - 2, 1, 1)
    assert len(done) == 2  # both attempts ran the step (no record held one back)


def reserved(running: Running, order: Order) -> dict[str, Any]:
    state: dict[str, Any] = {"order": order.model_dump(mode="json")}
    reserve = two_environments(running.stack, "reserve_inventory")[0].invoke(state)
    assert not reserve.errored, reserve.payload
    state["reservation"] = reserve.json()
    return state


def test_f10_the_same_payment_racing_itself_in_two_environments_charges_once(
    running: Running, received_order: tuple[Order, str]
) -> None:
    """Given a reserved order, when TakePayment runs for it in two environments at the same
    moment, then both reach the provider with the order's charge key, the provider charges
    once and answers both with that charge, and both record it under the order-row lock: one
    charge in the ledger, one payments row, one PAID event, the same answer twice.

    Fails if: TakePayment stops sending the order's Idempotency-Key (the ledger would hold two
    charges), or record_charge stops being ON CONFLICT DO NOTHING / stops logging PAID only for
    the first recording (two rows, or two PAID events).
    """
    order, _ = received_order
    state = reserved(running, order)
    provider = running.stack.provider
    requests_before = provider.ledger.requests_received

    results, waiting = race_in_two_environments(running, "take_payment", state)

    requests = provider.ledger.requests_received - requests_before
    with running.stack.db() as conn:
        payments = count(conn, "SELECT count(*) FROM payments WHERE order_id = %s", order.order_id)
        history = events(conn, order.order_id)
    assert waiting == 2
    assert [r.errored for r in results] == [False, False], [r.payload for r in results]
    assert results[0].json() == results[1].json()
    assert requests == 2  # both attempts reached the provider...
    assert charges(running, order.order_id) == 1  # ...which charged once
    assert (payments, history["PAID"]) == (1, 1)


def test_f10_the_same_refund_racing_itself_in_two_environments_refunds_once(
    running: Running, received_order: tuple[Order, str]
) -> None:
    """Given a charged order, when RefundPayment runs for it in two environments at the same
    moment, then the provider refunds once (both send the order's refund key) and the refund is
    recorded once: one refund in the ledger, the payment REFUNDED, one REFUNDED event.

    Fails if: RefundPayment stops sending the refund key (two refunds), or record_refund logs
    an event for a refund it did not change (two REFUNDED events: the bug this test found when
    the steps' idempotency records were removed).
    """
    order, _ = received_order
    state = reserved(running, order)
    paid = two_environments(running.stack, "take_payment")[0].invoke(state)
    assert not paid.errored, paid.payload
    state["payment"] = paid.json()

    results, waiting = race_in_two_environments(running, "refund_payment", state)

    with running.stack.db() as conn:
        status = conn.execute(
            "SELECT status FROM payments WHERE order_id = %s", (order.order_id,)
        ).fetchone()
        history = events(conn, order.order_id)
    assert waiting == 2
    assert [r.errored for r in results] == [False, False], [r.payload for r in results]
    assert results[0].json() == results[1].json()
    assert refunds(running, order.order_id) == 1
    assert status == ("REFUNDED",)
    assert history["REFUNDED"] == 1
