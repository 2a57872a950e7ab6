"""F10 Overlapping executions for the same entity race each other.

Two races, both on the full local stack:
- different orders racing for the last unit of a SKU: the conditional stock update and
  ``CHECK (available >= 0)`` let exactly one win, the others fail out of stock, no oversell;
- the same order's step racing itself in two execution environments (two worker processes,
  as two overlapping Step Functions attempts would run): the in-progress idempotency record
  lets one attempt do the work while the other waits for it and replays its result.
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

WAITING = "an earlier attempt holds this step; waiting for it to expire"
REPLAYED = "duplicate suppressed; returning the stored result"


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
    running: Running, handler_module: str, state: dict[str, Any], order_id: str
) -> list[InvokeResult]:
    """Invoke the step in two environments at once while the order row is locked, so both
    attempts overlap for sure; release the lock once the second one is seen waiting."""
    first, second = two_environments(running.stack, handler_module)
    results: list[InvokeResult] = []
    postgres = running.stack.postgres
    assert postgres is not None
    with psycopg.connect(postgres.conninfo()) as blocker:
        blocker.execute("SELECT 1 FROM orders WHERE order_id = %s FOR UPDATE", (order_id,))
        threads = [
            threading.Thread(target=lambda w=worker: results.append(w.invoke(state)))
            for worker in (first, second)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 4  # under the 5 s statement timeout the winner waits in
        while time.monotonic() < deadline and not log_lines(
            running, message=WAITING, order_id=order_id
        ):
            time.sleep(0.02)
        blocker.commit()  # the winner's locked statement proceeds
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_f10_the_same_reservation_racing_itself_in_two_environments_reserves_once(
    running: Running, received_order: tuple[Order, str]
) -> None:
    """Given an order in RECEIVED, when ReserveInventory runs for it in two environments at
    the same moment (two overlapping attempts), then one attempt takes the stock while the other
    finds its in-progress record, waits for it (no error back to the saga) and replays its
    result: both answer the same reservation, the stock is taken once, one reservation row and
    one RESERVED event exist.

    Fails if: the step loses `@idempotent` (both would run: the order row lock still serialises
    them and the existing-reservation check replays, so the replay count catches it), or
    `_run_outlasting_a_crashed_attempt` stops waiting (the loser would error with
    IdempotencyAlreadyInProgressError), or repo.reserve_inventory stops locking the order row.
    """
    order, sku = received_order
    state = {"order": order.model_dump(mode="json")}

    results = race_in_two_environments(running, "reserve_inventory", state, order.order_id)

    with running.stack.db() as conn:
        stock, rows, history = (
            available(conn, sku),
            reservations(conn, order.order_id),
            events(conn, order.order_id),
        )
    waited = log_lines(running, message=WAITING, order_id=order.order_id)
    replayed = log_lines(running, message=REPLAYED, order_id=order.order_id)
    assert [r.errored for r in results] == [False, False], [r.payload for r in results]
    assert results[0].json() == results[1].json()
    assert results[0].json()["amount_cents"] == 2 * 500
    assert (stock, rows, history["RESERVED"]) == (10 - 2, 1, 1)
    assert len(waited) >= 1
    assert {line["_function"] for line in waited} == {line["_function"] for line in replayed}
    assert len(replayed) == 1  # the loser replayed; the winner did the work


def test_f10_the_same_payment_racing_itself_in_two_environments_charges_once(
    running: Running, received_order: tuple[Order, str]
) -> None:
    """Given a reserved order, when TakePayment runs for it in two environments at the same
    moment, then the provider is called by one attempt only and charges once, the other waits
    for it and replays the same charge: one charge in the ledger, one payments row, one PAID
    event.

    Fails if: TakePayment loses `@idempotent` (the provider would see two requests; its
    Idempotency-Key would still hold the ledger at one charge, so the request count catches it)
    or stops sending the key, or the loser errors instead of waiting.
    """
    order, _ = received_order
    state: dict[str, Any] = {"order": order.model_dump(mode="json")}
    reserve = two_environments(running.stack, "reserve_inventory")[0].invoke(state)
    assert not reserve.errored, reserve.payload
    state["reservation"] = reserve.json()
    provider = running.stack.provider
    charge_requests_before = provider.ledger.requests_received

    results = race_in_two_environments(running, "take_payment", state, order.order_id)

    requests = provider.ledger.requests_received - charge_requests_before
    with running.stack.db() as conn:
        payments = count(conn, "SELECT count(*) FROM payments WHERE order_id = %s", order.order_id)
        history = events(conn, order.order_id)
    assert [r.errored for r in results] == [False, False], [r.payload for r in results]
    assert results[0].json() == results[1].json()
    assert charges(running, order.order_id) == 1
    assert requests == 1  # only the winner reached the provider
    assert (payments, history["PAID"]) == (1, 1)
    assert len(log_lines(running, message=WAITING, order_id=order.order_id)) >= 1
    assert len(log_lines(running, message=REPLAYED, order_id=order.order_id)) == 1
