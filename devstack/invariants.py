"""The invariants every local run checks, read from the system's own records.

``make demo`` and ``make chaos`` both end by asking the same questions of the same records:
PostgreSQL (orders, reservations, stock), the fake provider's ledger (charges, refunds), Step
Functions (executions) and the DLQs. ``Records.read`` takes that snapshot once, after the
stack settled; each check returns the offending ids (order ids, SKUs, refund ids), so a report
can print both the count and examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from orders_saga.logic.order_identity import order_id_of_execution

if TYPE_CHECKING:
    from devstack.payment_provider import Charge, Refund
    from devstack.stack import LocalStack

TERMINAL: Final = frozenset({"CONFIRMED", "FAILED"})


@dataclass(frozen=True)
class Records:
    """One snapshot of the records the invariants are checked against."""

    status: Mapping[str, str]  # order id -> status (PostgreSQL)
    amount_cents: Mapping[str, int]  # order id -> order total
    units_held: Mapping[str, int]  # order id -> units still reserved (not released)
    stock: Sequence[tuple[str, int, int]]  # (sku, available, units held) per SKU
    initial_stock: Mapping[str, int]  # sku -> units seeded
    charges: Sequence[Charge]
    refunds: Sequence[Refund]
    executions: Sequence[Mapping[str, Any]]  # Step Functions list_executions entries
    dead_letters: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    failure_reason: Mapping[str, str] = field(default_factory=dict)  # FAILED order -> why

    @classmethod
    def read(cls, stack: LocalStack) -> Records:
        """PostgreSQL, the ledger, the executions and every DLQ of a settled stack."""
        with stack.db() as conn:
            orders = conn.execute(
                "SELECT order_id::text, status, coalesce(amount_cents, 0), failure_reason"
                " FROM orders"
            ).fetchall()
            held = conn.execute(
                "SELECT order_id::text, sum(quantity) FROM reservations"
                " WHERE released_at IS NULL GROUP BY order_id"
            ).fetchall()
            stock = conn.execute(
                "SELECT i.sku, i.available,"
                " coalesce(sum(r.quantity) FILTER (WHERE r.released_at IS NULL), 0)"
                " FROM inventory i LEFT JOIN reservations r ON r.sku = i.sku"
                " GROUP BY i.sku, i.available"
            ).fetchall()
        ledger = stack.provider.ledger
        return cls(
            status={str(r[0]): str(r[1]) for r in orders},
            amount_cents={str(r[0]): int(r[2]) for r in orders},
            units_held={str(r[0]): int(r[1]) for r in held},
            stock=[(str(sku), int(avail), int(n)) for sku, avail, n in stock],
            initial_stock={sku: units for sku, _, _, units in stack.catalogue},
            charges=ledger.charges,
            refunds=ledger.refunds,
            executions=stack.executions(),
            dead_letters=dead_letters(stack),
            failure_reason={str(r[0]): str(r[3]) for r in orders if r[3] is not None},
        )

    # derived facts

    def net_charged(self) -> Counter[str]:
        """Order id -> cents charged and not refunded."""
        refunded = {r.charge_id for r in self.refunds}
        net: Counter[str] = Counter()
        for c in self.charges:
            if c.charge_id not in refunded:
                net[c.reference] += c.amount_cents
        return net

    def in_dead_letters(self, order_ids: Iterable[str]) -> dict[str, str]:
        """Order id -> the DLQ whose message body names it."""
        wanted = set(order_ids)
        found: dict[str, str] = {}
        for queue, messages in self.dead_letters.items():
            for message in messages:
                body = str(message.get("Body", ""))
                found.update((oid, queue) for oid in wanted if oid in body)
        return found

    def running_executions(self) -> list[str]:
        return [str(e["name"]) for e in self.executions if e["status"] == "RUNNING"]


def dead_letters(stack: LocalStack) -> dict[str, list[dict[str, Any]]]:
    """Every message in the intake DLQ, the orders DLQ and the needs-attention queue."""
    res = stack.resources
    queues = {
        "intake DLQ": res.intake_dlq_url if res else None,
        "orders DLQ": res.orders_dlq_url if res else None,
        "needs attention": res.needs_attention_queue_url if res else None,
    }
    out: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for name, url in queues.items():
        if url is None or url in seen:  # the intake DLQ may be the orders DLQ
            continue
        seen.add(url)
        out[name] = stack.queue_messages(url)
    return out


def failure_reason(message: Mapping[str, Any]) -> str:
    attrs = message.get("MessageAttributes", {})
    reason = str(attrs.get("failure_reason", {}).get("StringValue", ""))
    return reason or "no failure_reason attribute (redriven at maxReceiveCount?)"


# the checks: each returns the offending ids; an empty list means the invariant holds


def lost(records: Records, order_ids: Iterable[str]) -> list[str]:
    """Accepted orders with neither an order row nor a dead letter: the system dropped them."""
    ids = list(order_ids)
    in_dlq = records.in_dead_letters(ids)
    return [oid for oid in ids if oid not in records.status and oid not in in_dlq]


def not_terminal(records: Records, order_ids: Iterable[str]) -> list[str]:
    """Orders stuck short of CONFIRMED/FAILED (and not dead-lettered), and orders whose
    execution is still running: each order once."""
    ids = list(order_ids)
    in_dlq = records.in_dead_letters(ids)
    stuck = [
        oid
        for oid in ids
        if oid in records.status and records.status[oid] not in TERMINAL and oid not in in_dlq
    ]
    running = [order_id_of_execution(name) for name in records.running_executions()]
    return list(dict.fromkeys(stuck + running))


def double_charged(records: Records) -> list[str]:
    """References (order ids) the provider charged more than once."""
    counts = Counter(c.reference for c in records.charges)
    return sorted(ref for ref, n in counts.items() if n > 1)


def oversold(records: Records) -> list[str]:
    """SKUs whose stock went negative or no longer adds up: available + held != seeded."""
    return [
        sku
        for sku, available, held in records.stock
        if available < 0 or available + held != records.initial_stock.get(sku, available + held)
    ]


def refunds_without_charges(records: Records) -> list[str]:
    charge_ids = {c.charge_id for c in records.charges}
    return [r.refund_id for r in records.refunds if r.charge_id not in charge_ids]


def failed_not_compensated(records: Records, order_ids: Iterable[str]) -> list[str]:
    """FAILED orders still charged (net of refunds) or still holding stock."""
    net = records.net_charged()
    return [
        oid
        for oid in order_ids
        if records.status.get(oid) == "FAILED" and (net[oid] or records.units_held.get(oid))
    ]


def confirmed_charge_mismatch(records: Records, order_ids: Iterable[str]) -> list[str]:
    """CONFIRMED orders whose net charge is not exactly the order total."""
    net = records.net_charged()
    return [
        oid
        for oid in order_ids
        if records.status.get(oid) == "CONFIRMED" and net[oid] != records.amount_cents.get(oid, -1)
    ]


def check(records: Records, order_ids: Iterable[str]) -> dict[str, list[str]]:
    """The invariants both runs report, by name (all must be empty)."""
    ids = list(order_ids)
    return {
        "lost (submitted but nowhere)": lost(records, ids),
        "not terminal": not_terminal(records, ids),
        "double-charged": double_charged(records),
        "oversold skus": oversold(records),
        "refunds without charges": refunds_without_charges(records),
        "failed, not compensated": failed_not_compensated(records, ids),
        "confirmed, charge != total": confirmed_charge_mismatch(records, ids),
    }


__all__ = [
    "TERMINAL",
    "Records",
    "check",
    "confirmed_charge_mismatch",
    "dead_letters",
    "double_charged",
    "failed_not_compensated",
    "failure_reason",
    "lost",
    "not_terminal",
    "oversold",
    "refunds_without_charges",
]
