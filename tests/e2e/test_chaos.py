"""F01/F02/F09/F10/F19/F06 together: the chaos run (``make chaos``) at a CI-sized N.

Runs in-process against its own local stack (the chaos seeds its own catalogue with hot SKUs)
and asserts that every invariant holds *and* that every enabled fault was actually injected,
so a run that silently injected nothing cannot pass. It fails if, e.g., a saga step stopped
replaying its charge by Idempotency-Key after a crash (double-charged), a compensation were
skipped (failed, not compensated) or the intake stopped dead-lettering poison messages.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from devstack.call_recorder import CALL_LOG_DIR_ENV
from devstack.chaos import ChaosSettings, run
from infra.service import this_service
from tests.localstack import CDK_OUT

# Payment timeouts are left at 0 here: each one holds a TakePayment worker for the adapter's
# read timeout (5 s), which the CI time budget cannot afford; `make chaos` can enable them.
SETTINGS = ChaosSettings(
    orders=200,
    seed=7,
    concurrency=8,
    duplicate_rate=0.1,
    poison_rate=0.05,
    payment_5xx_rate=0.05,
    payment_timeout_rate=0.0,
    lost_response_rate=0.05,
    # Each crash holds a TakePayment environment until the dead attempt's idempotency record
    # expires (the function timeout, 10 s): a few are enough to prove the replay.
    crash_after_side_effect_rate=0.02,
    db_drop_rate=1.0,
    declined_rate=0.03,
    hot_skus=2,
    # Two environments per function (the CLI warms up to 4): fewer cold starts for a short run.
    pool_size=2,
    settle_timeout_s=120,
    cdk_out=CDK_OUT,
)


@pytest.mark.timeout(240)
def test_chaos_f01_f02_f09_f10_invariants_hold_under_injected_faults(
    aws_call_log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given 200 orders with duplicate deliveries, poison messages, provider 5xx and lost
    responses, TakePayment killed after charging, DB connections dropped and hot SKUs, when
    they run through the whole local stack, then no order is lost, double-charged, oversold
    or left uncompensated, and every enabled fault was injected at least once."""
    if not this_service().template_path("dev").exists():
        pytest.fail("the dev template is missing: run `make synth` first")
    # F20: the chaos stack records its functions' AWS calls where the session audit of
    # tests/catalogue/test_f20_least_privilege.py reads them (LocalStack takes the variable).
    monkeypatch.setenv(CALL_LOG_DIR_ENV, str(aws_call_log_dir))
    log = io.StringIO()
    report = run(SETTINGS, progress_stream=log)
    rendered = report.render()

    assert report.settled, rendered
    assert report.violations, "the report checked no invariant"
    assert not any(report.violations.values()), rendered
    assert report.ok, rendered

    enabled = {
        "duplicate delivery (sqs redelivery)": SETTINGS.duplicate_rate,
        "duplicate delivery (client re-POST)": SETTINGS.duplicate_rate,
        "poison message": SETTINGS.poison_rate,
        "payment 5xx": SETTINGS.payment_5xx_rate,
        "payment lost response": SETTINGS.lost_response_rate,
        "crash after side effect (TakePayment)": SETTINGS.crash_after_side_effect_rate,
        "db connection drop": SETTINGS.db_drop_rate,
        "hot sku contention (orders)": SETTINGS.hot_skus,
    }
    for kind, rate in enabled.items():
        assert rate > 0
        assert report.injected[kind] > 0, f"{kind} was enabled but never injected\n{rendered}"

    # Every order accounted for; hot SKUs really ran out (contention, not just traffic).
    counts = report.counts
    assert counts["submitted"] + counts["rejected by the API (4xx)"] + counts[
        "client gave up (5xx / no answer)"
    ] == (SETTINGS.orders), rendered
    assert counts["submitted"] >= SETTINGS.orders * 0.9, rendered
    assert (
        counts["confirmed"] + counts["failed and compensated"] + counts["in a DLQ"]
        == (counts["submitted"])
    ), rendered
    assert counts["failed and compensated"] > 0, rendered
    # Every poison message reached the DLQ with its reason.
    assert (
        sum(n for reason, n in report.dlq_reasons.items() if "invalid message" in reason)
        >= (report.injected["poison message"])
    ), rendered
    # F03: attempts per order stayed within the documented worst case.
    assert 0 < report.attempts_max <= report.attempts_worst_case, rendered
