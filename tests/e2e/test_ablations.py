"""Every containment is load-bearing (issue 11): switched off, its invariant breaks.

The rows of ``make compare`` at a CI-sized N, on one local stack of their own: for each
ablation, the hardened run and the run without that containment, same seed, same faults. A
proven row must break its invariant without the containment and break none with it; an argued
row (ADR 0009) must still break nothing, or the argument is out of date. So a checker that no
longer sees its violation, a fault injector that stopped injecting, or a containment that no
longer does anything fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import ablations as abl
from devstack.chaos import ChaosSettings, HookedProvider, catalogue
from devstack.compare import EVERYTHING_ROW, Outcome, Row, compare, rows
from devstack.lambda_runtime import discard_logs
from devstack.stack import LocalStack
from tests.localstack import CDK_OUT

# 12 orders per run: every fault of a row is seeded, and each row's rates are high enough to
# hit at this N (the rows run twice each: about 4 minutes for the module on 2 cores).
BASE = ChaosSettings(orders=12, seed=5, pool_size=2, settle_timeout_s=12, cdk_out=CDK_OUT)
ROWS = {row.name: row for row in rows()}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    if not (CDK_OUT / "OrdersSaga-dev.template.json").exists():
        pytest.fail("cdk.out/OrdersSaga-dev.template.json is missing: run `make synth` first")
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
