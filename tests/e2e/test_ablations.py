"""Every containment is load-bearing (issue 11): switched off, its invariant breaks.

The rows of ``make compare`` at a CI-sized N, on one local stack of their own: for each
ablation, the hardened run and the run without that containment, same seed, same faults. A
proven row must break its invariant without the containment and break none with it; an argued
row (ADR 0009) must still break nothing, or the argument is out of date. So a checker that no
longer sees its violation, a fault injector that stopped injecting, or a containment that no
longer does anything fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devstack import ablations as abl
from devstack.chaos import ChaosSettings, HookedProvider, catalogue
from devstack.compare import EVERYTHING_ROW, Outcome, Row, compare, rows
from devstack.lambda_runtime import discard_logs
from devstack.stack import LocalStack
from infra.service import this_service
from tests.catalogue.full_stack import accepted_message
from tests.localstack import CDK_OUT

# 12 orders per run: every fault of a row is seeded, and each row's rates are high enough to
# hit at this N (the rows run twice each: about 4 minutes for the module on 2 cores).
BASE = ChaosSettings(orders=12, seed=5, pool_size=2, settle_timeout_s=12, cdk_out=CDK_OUT)
ROWS = {row.name: row for row in rows()}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    if not this_service().template_path("dev").exists():
        pytest.fail("the dev template is missing: run `make synth` first")
    announced: list[str] = []
    with LocalStack(
        cdk_out=CDK_OUT,
        pool_size=BASE.pool_size,
        catalogue=catalogue(BASE),
        say=announced.append,
        log_sink=discard_logs,
        provider=HookedProvider(),
        tracing=False,
    ) as running:
        yield running


def run_row(stack: LocalStack, row: Row) -> Outcome:
    (outcome,) = compare(stack, [row], BASE)
    return outcome


def explain(outcome: Outcome) -> str:
    return (
        f"{outcome.name}: hardened {outcome.hardened}\nwithout it {outcome.ablated}\n"
        f"faults injected {outcome.injected}"
    )


PROVEN = [a.key for a in abl.ABLATIONS if a.protects]
ARGUED = [a.key for a in abl.ABLATIONS if not a.protects]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("key", PROVEN)
def test_switched_off_the_containment_breaks_its_invariant_and_hardened_nothing_breaks(
    stack: LocalStack, key: str
) -> None:
    outcome = run_row(stack, ROWS[key])
    assert outcome.injected, f"no fault was injected\n{explain(outcome)}"
    assert not any(outcome.hardened.values()), explain(outcome)
    assert outcome.ablated[outcome.protects] > 0, explain(outcome)
    assert outcome.proven


@pytest.mark.timeout(180)
@pytest.mark.parametrize("key", ARGUED)
def test_an_argued_layer_still_breaks_nothing_alone(stack: LocalStack, key: str) -> None:
    """ADR 0009 argues these are covered by another layer. If one starts breaking an
    invariant alone, it has become load-bearing: make it a proven row."""
    outcome = run_row(stack, ROWS[key])
    assert outcome.injected, f"no fault was injected\n{explain(outcome)}"
    assert not any(outcome.hardened.values()), explain(outcome)
    assert not any(outcome.ablated.values()), explain(outcome)
    if key == "F19-circuit-breaker":
        hardened, without = outcome.measured["payment provider requests"]
        assert without > 2 * hardened, explain(outcome)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("keys", [keys for keys, _ in abl.PAIRS], ids="+".join)
def test_two_layers_that_cover_each_other_break_their_invariant_together(
    stack: LocalStack, keys: tuple[str, ...]
) -> None:
    outcome = run_row(stack, ROWS["+".join(keys)])
    assert not any(outcome.hardened.values()), explain(outcome)
    assert outcome.proven, explain(outcome)


@pytest.mark.timeout(300)
def test_the_reasonable_but_wrong_app_breaks_what_the_hardened_one_keeps(
    stack: LocalStack,
) -> None:
    """Every containment off and every fault on, against the hardened app on the same seed."""
    outcome = run_row(stack, ROWS[EVERYTHING_ROW])
    assert not any(outcome.hardened.values()), explain(outcome)
    broken = outcome.broken
    for invariant in ("double-charged", "oversold skus", "failed, not compensated"):
        assert broken.get(invariant, 0) > 0, explain(outcome)


def _conflicting_delivery(stack: LocalStack) -> tuple[int, int, str]:
    """One order through the queue, settled; then another message under the same order id
    (another producer, or a DLQ message edited before its redrive). Returns the intake DLQ's
    messages for that order, the order's executions, and the order's items as stored."""
    resources = stack.resources
    assert resources is not None
    order_id = str(uuid.uuid4())
    stack.send_raw_message(accepted_message(order_id, "conflict-customer", ("SKU-APPLE", 1)))
    assert stack.wait_until_settled(timeout_s=60)
    stack.send_raw_message(accepted_message(order_id, "conflict-customer", ("SKU-PEAR", 5)))
    assert stack.wait_until_settled(timeout_s=60)
    dead = [
        m
        for m in stack.queue_messages(resources.intake_dlq_url)
        if order_id in str(m.get("Body", ""))
    ]
    executions = [e for e in stack.executions() if e["name"] == f"order-{order_id}"]
    with stack.db() as conn:
        row = conn.execute("SELECT items::text FROM orders WHERE order_id = %s", (order_id,))
        items = str(row.fetchone())
    return len(dead), len(executions), items


@pytest.mark.timeout(180)
def test_only_the_intake_record_dead_letters_another_message_under_an_existing_order(
    stack: LocalStack,
) -> None:
    """ADR 0012 keeps the intake's idempotency record for its payload check, the one thing the
    execution name cannot do: a *different* message under an order id that already has a saga
    is dead-lettered with its reason. Without the record, StartExecution answers
    ExecutionAlreadyExists, the intake takes that for a duplicate, and the conflicting message
    is deleted unseen: nothing shows that two producers disagree about the order.

    Fails if: the intake stops validating the payload against its record (hardened run: no
    DLQ message), or the record becomes redundant (the switched-off run dead-letters too: then
    drop the layer, as ADR 0012 says)."""
    stack.apply_ablations(frozenset())
    hardened = _conflicting_delivery(stack)
    stack.apply_ablations(frozenset({"F01-intake-idempotency"}))
    try:
        without = _conflicting_delivery(stack)
    finally:
        stack.apply_ablations(frozenset())

    assert hardened[:2] == (1, 1), hardened  # dead-lettered, one saga
    assert without[:2] == (0, 1), without  # one saga, and the conflict went unseen
    assert "SKU-APPLE" in hardened[2]
    assert "SKU-APPLE" in without[2]
