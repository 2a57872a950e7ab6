"""The invariant checks every local run ends with, on hand-made records."""

from __future__ import annotations

from devstack.invariants import Records, not_terminal


def records(status: dict[str, str], running: list[str]) -> Records:
    return Records(
        status=status,
        amount_cents=dict.fromkeys(status, 0),
        units_held={},
        stock=[],
        initial_stock={},
        charges=[],
        refunds=[],
        executions=[{"name": f"order-{oid}", "status": "RUNNING"} for oid in running]
        + [{"name": "order-done", "status": "SUCCEEDED"}],
    )


def test_not_terminal_names_each_stuck_order_once_whether_its_row_or_its_execution_is_stuck() -> (
    None
):
    """Given an order whose row is RECEIVED and whose execution still runs, one whose row is
    RECEIVED with no execution, one whose execution runs after its row turned CONFIRMED, and
    one settled order, then not_terminal names the first three, each once, by order id.

    Fails if: a running execution is reported by its execution name (the 10,000-order report
    counted one stuck order twice, as the order and as ``order-<id>``) or is missed."""
    found = not_terminal(
        records(
            {"a": "RECEIVED", "b": "RECEIVED", "c": "CONFIRMED", "done": "CONFIRMED"},
            running=["a", "c"],
        ),
        ["a", "b", "c", "done"],
    )

    assert found == ["a", "b", "c"]
