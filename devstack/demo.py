"""``make demo``: a realistic batch of orders through the local stack, then the invariants.

Every order goes in through the local API Gateway (JWT, request model, the real Api
function) or, for the queue scenarios, straight onto the orders queue. The report is read
from the system's own records: PostgreSQL, the payment provider's ledger, Step Functions and
the DLQs. Exit status 1 when any invariant is violated or a scenario ends unexpectedly.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import urllib3
from orders_saga.logic.order_identity import execution_name_for, order_id_for
from orders_saga.models import Order, OrderAcceptedV2, OrderLine

from devstack.invariants import TERMINAL, Records, check
from devstack.stack import LocalStack


@dataclass
class Submission:
    scenario: str
    expect: str  # the final order status the scenario must end in, or "DLQ" / "REJECTED"
    order_id: str | None = None
    http_status: int | None = None
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class Customer:
    name: str
    token: str

    @property
    def customer_id(self) -> str:
        claims = jwt.decode(self.token, options={"verify_signature": False})
        return str(claims["sub"])


class Client:
    """A bare HTTP client for the local API: no retries of its own (the demo retries on purpose)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=30))

    def post_order(
        self, customer: Customer, key: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        response = self.http.request(
            "POST",
            f"{self.base_url}/orders",
            body=json.dumps(body).encode(),
            headers={
                "Authorization": customer.token,
                "Idempotency-Key": key,
                "Content-Type": "application/json",
            },
        )
        return response.status, json.loads(response.data or b"{}")

    def get_order(self, customer: Customer, order_id: str) -> tuple[int, dict[str, Any]]:
        response = self.http.request(
            "GET", f"{self.base_url}/orders/{order_id}", headers={"Authorization": customer.token}
        )
        return response.status, json.loads(response.data or b"{}")


def order_body(
    *lines: tuple[str, int], payment_method: str = "pm_card_visa", currency: str = "EUR"
) -> dict[str, Any]:
    return {
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
        "payment_method": payment_method,
        "currency": currency,
    }


def key() -> str:
    return f"demo-{uuid.uuid4().hex[:16]}"


def submit(
    client: Client,
    customer: Customer,
    scenario: str,
    expect: str,
    body: dict[str, Any],
    idem_key: str | None = None,
) -> Submission:
    status, response = client.post_order(customer, idem_key or key(), body)
    return Submission(scenario, expect, response.get("order_id"), status, response)


def run_scenarios(stack: LocalStack, say: Callable[[str], None]) -> list[Submission]:
    client = Client(stack.api_url)
    alice = Customer("alice", stack.customer_token("alice@example.com"))
    bob = Customer("bob", stack.customer_token("bob@example.com"))
    subs: list[Submission] = []

    say("phase 1: happy orders, out of stock, declined payment, a race for the last unit")
    jobs: list[tuple[Customer, str, str, dict[str, Any]]] = [
        (alice, "happy", "CONFIRMED", order_body(("SKU-APPLE", 3), ("SKU-PEAR", 2))),
        (alice, "happy", "CONFIRMED", order_body(("SKU-COFFEE", 1))),
        (alice, "happy (USD)", "CONFIRMED", order_body(("SKU-TEA", 2), currency="USD")),
        (bob, "happy", "CONFIRMED", order_body(("SKU-APPLE", 10))),
        (bob, "happy", "CONFIRMED", order_body(("SKU-PEAR", 1), ("SKU-TEA", 1), ("SKU-COFFEE", 2))),
        (bob, "happy (GBP)", "CONFIRMED", order_body(("SKU-APPLE", 1), currency="GBP")),
        (alice, "out of stock", "FAILED", order_body(("SKU-APPLE", 1), ("SKU-SOLD-OUT", 1))),
        (
            bob,
            "payment declined",
            "FAILED",
            order_body(("SKU-COFFEE", 1), payment_method="pm_card_declined"),
        ),
        (alice, "race for the last unit", "RACE", order_body(("SKU-LAST-ONE", 1))),
        (bob, "race for the last unit", "RACE", order_body(("SKU-LAST-ONE", 1))),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        subs.extend(pool.map(lambda job: submit(client, job[0], job[1], job[2], job[3]), jobs))

    say("phase 2: client retries (same Idempotency-Key), and the same key with another body")
    retry_key = key()
    body = order_body(("SKU-PEAR", 4))
    first = submit(client, alice, "duplicate POST (first)", "CONFIRMED", body, retry_key)
    again = submit(client, alice, "duplicate POST (retry)", "SAME", body, retry_key)
    other = submit(
        client,
        alice,
        "same key, different body",
        "REJECTED",
        order_body(("SKU-PEAR", 5)),
        retry_key,
    )
    subs += [first, again, other]

    say("phase 3: queue-level faults: a duplicate delivery, a malformed message, a v1 message")
    dup = submit(client, bob, "duplicate SQS delivery", "CONFIRMED", order_body(("SKU-TEA", 1)))
    subs.append(dup)
    if dup.order_id:
        redelivered = OrderAcceptedV2.for_order(
            Order(
                order_id=dup.order_id,
                customer_id=bob.customer_id,
                items=[OrderLine(sku="SKU-TEA", quantity=1)],
                payment_method="pm_card_visa",
                currency="EUR",
            )
        )
        stack.send_raw_message(redelivered.model_dump_json())
    stack.send_raw_message('{"schema_version": "2", "order_id": 42, "items": "not a list"')
    subs.append(Submission("malformed message", "DLQ"))
    v1_order = order_id_for(bob.customer_id, key())
    stack.send_raw_message(
        json.dumps(
            {
                "schema_version": "1",
                "order_id": v1_order,
                "customer_id": bob.customer_id,
                "items": [{"sku": "SKU-APPLE", "quantity": 2}],
                "payment_method": "pm_card_visa",
                "accepted_at": datetime.now(UTC).isoformat(),
            }
        )
    )
    subs.append(Submission("previous schema version (v1)", "CONFIRMED", v1_order, None))
    if not stack.wait_until_settled(timeout_s=120):
        say("WARNING: the stack did not settle within 120 s")

    say("phase 4: the provider charges but the response is lost (a crash after the side effect)")
    stack.provider.faults.set(lose_next_charge_responses=1)
    subs.append(
        submit(client, alice, "charge response lost", "CONFIRMED", order_body(("SKU-COFFEE", 1)))
    )
    if not stack.wait_until_settled(timeout_s=120):
        say("WARNING: the stack did not settle within 120 s")
    stack.provider.faults.reset()
    return subs


@dataclass
class OrderFacts:
    status: str | None
    net_charged_cents: int
    currency: str
    units_reserved: int
    attempts: int


def collect(stack: LocalStack, order_ids: list[str]) -> dict[str, OrderFacts]:
    ledger = stack.provider.ledger
    refunded = {r.charge_id for r in ledger.refunds}
    facts: dict[str, OrderFacts] = {}
    with stack.db() as conn:
        for order_id in order_ids:
            row = conn.execute(
                "SELECT status, currency FROM orders WHERE order_id = %s", (order_id,)
            ).fetchone()
            units = conn.execute(
                "SELECT coalesce(sum(quantity), 0) FROM reservations"
                " WHERE order_id = %s AND released_at IS NULL",
                (order_id,),
            ).fetchone()
            charges = ledger.charges_for(order_id)
            net = sum(c.amount_cents for c in charges if c.charge_id not in refunded)
            facts[order_id] = OrderFacts(
                status=row[0] if row else None,
                net_charged_cents=net,
                currency=row[1] if row else "",
                units_reserved=int(units[0]) if units else 0,
                attempts=stack.counter.attempts(order_id),
            )
    return facts


def invariants(stack: LocalStack, subs: list[Submission]) -> dict[str, int]:
    """The invariants every local run checks (devstack/invariants.py), over the orders the
    scenarios expect to exist."""
    expected = sorted({s.order_id for s in subs if s.order_id and s.expect != "REJECTED"})
    found = check(Records.read(stack), expected)
    return {name: len(ids) for name, ids in found.items()}


def outcome_problems(
    stack: LocalStack, subs: list[Submission], facts: dict[str, OrderFacts]
) -> list[str]:
    problems: list[str] = []
    race = [facts[s.order_id].status for s in subs if s.expect == "RACE" and s.order_id]
    if sorted(str(x) for x in race) != ["CONFIRMED", "FAILED"]:
        problems.append(
            f"race for the last unit ended {race}, expected one CONFIRMED and one FAILED"
        )
    first = next(s for s in subs if s.scenario == "duplicate POST (first)")
    retry = next(s for s in subs if s.scenario == "duplicate POST (retry)")
    if retry.response != first.response:
        problems.append("the retried POST did not return the first response")
    for sub in subs:
        if sub.expect == "REJECTED" and sub.http_status != 422:
            problems.append(f"{sub.scenario}: HTTP {sub.http_status}, expected 422")
        elif sub.expect in TERMINAL and sub.order_id and facts[sub.order_id].status != sub.expect:
            problems.append(
                f"{sub.scenario}: ended {facts[sub.order_id].status}, expected {sub.expect}"
            )
    malformed = stack.queue_messages(stack.resources.intake_dlq_url if stack.resources else None)
    reasons = [
        m.get("MessageAttributes", {}).get("failure_reason", {}).get("StringValue", "")
        for m in malformed
    ]
    if len(malformed) != 1 or not reasons[0].startswith("invalid message"):
        problems.append(
            f"intake DLQ holds {len(malformed)} messages,"
            " expected the 1 malformed one with its reason"
        )
    dup = next(s for s in subs if s.scenario == "duplicate SQS delivery")
    if (
        dup.order_id
        and sum(1 for e in stack.executions() if e["name"] == execution_name_for(dup.order_id)) != 1
    ):
        problems.append("the duplicate SQS delivery started more than one execution")
    lost_response = next(s for s in subs if s.scenario == "charge response lost")
    if (
        lost_response.order_id
        and len(stack.provider.ledger.charges_for(lost_response.order_id)) != 1
    ):
        problems.append("the order whose charge response was lost was not charged exactly once")
    return problems


def money(cents: int, currency: str) -> str:
    return f"{cents / 100:,.2f} {currency}".strip() if cents else "-"


ROW = "{:<36}  {:<30} {:<12} {:>12} {:>8} {:>8}"


def report(
    subs: list[Submission],
    facts: dict[str, OrderFacts],
    inv: dict[str, int],
    problems: list[str],
    elapsed: float,
    out: Callable[[str], None],
) -> None:
    out("")
    out(ROW.format("order id", "scenario", "final state", "charged", "reserved", "attempts"))
    out("-" * 112)
    for sub in subs:
        if sub.scenario == "duplicate POST (retry)":
            state = "same order" if sub.http_status == 202 else f"HTTP {sub.http_status}"
            out(ROW.format(sub.order_id or "-", sub.scenario, state, "", "", ""))
        elif sub.order_id and sub.order_id in facts:
            f = facts[sub.order_id]
            charged = money(f.net_charged_cents, f.currency)
            status = f.status or "missing"
            out(
                ROW.format(
                    sub.order_id, sub.scenario, status, charged, f.units_reserved, f.attempts
                )
            )
        else:
            state = f"HTTP {sub.http_status}" if sub.http_status else sub.expect
            out(ROW.format("-", sub.scenario, state, "", "", ""))
    out("(charged = net of refunds; reserved = units still held; attempts = Lambda invocations)")
    out("")
    out("invariants (all must be 0):")
    for name, value in inv.items():
        out(f"  {name:<30} {value}")
    if problems:
        out("unexpected outcomes:")
        for problem in problems:
            out(f"  - {problem}")
    out(f"\n{len(facts)} orders in {elapsed:.1f} s")


def main() -> int:
    def say(message: str) -> None:
        print(f"demo: {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    with LocalStack(say=say) as stack:
        subs = run_scenarios(stack, say)
        order_ids = sorted({s.order_id for s in subs if s.order_id})
        facts = collect(stack, order_ids)
        inv = invariants(stack, subs)
        problems = outcome_problems(stack, subs, facts)
        report(subs, facts, inv, problems, time.monotonic() - started, print)
    ok = not any(inv.values()) and not problems
    print("RESULT: all invariants hold" if ok else "RESULT: FAILED", flush=True)
    return 0 if ok else 1
