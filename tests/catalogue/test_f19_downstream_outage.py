"""F19 Downstream outage cascades: the payment provider goes down while orders flow.

Contain: the circuit breaker in ``HttpPaymentGateway`` (functions/orders_saga/adapters/
payments.py), one per execution environment, raising ``TransientError`` while open so the
saga's jittered Retry backs off (infra/saga.py); its open period below the saga's expected
payment backoff (``infra.config.payment_expected_backoff_s``); and the intake switch,
``orders-ops intake pause | resume`` (ops/intake.py) on the Intake's event source mapping.

Everything runs through the session's local stack (``running``): API Gateway, the Api and
Intake workers, the SQS mapping (whose State in moto the local poller follows), the
synthesized state machine, the real step handlers, PostgreSQL and the fake provider with its
``down`` switch. Counts come from the provider's ledger and request counter, moto's
executions, PostgreSQL and the invocation counter.

Found by these tests and fixed: with ``breaker_reset_s`` at 30 s (and the saga's payment
retries waiting at most 1 + 2 + 4 s), an outage that opened the breakers failed every order in
flight for 30 s, although the provider was back after a second: the breaker outlived the
retries it was meant to slow down. The open period is now 2 s, below the expected backoff, and
``StageConfig`` rejects a longer one.

Time runs at production speed in the outage tests: the stack normally scales Step Functions
retry waits by 0.01 (``devstack.aws.ScaledRetrySleep``), which would let the saga's retries
race through a breaker that opens for real seconds. ``production_backoff`` sets the scale to
1 and pins full jitter's draw (uniform in [0, bound]) to its bound, so the waits are exactly
the configured ``RetryBudget.max_delays_s()`` and the outages can be sized from the config.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from moto.stepfunctions.parser.asl.component.common.retry import jitter_strategy_decl

from devstack.aws import ScaledRetrySleep
from infra.config import ConfigError, payment_expected_backoff_s, stage_config
from ops.cli import main as orders_ops
from tests.localstack import TERMINAL, Running, new_key

CONFIG = stage_config("dev")  # the template the local stack runs (cdk.out)
RETRY = CONFIG.retry
BREAKER_FAIL_MAX = CONFIG.payment.breaker_fail_max
BREAKER_RESET_S = CONFIG.payment.breaker_reset_s
STOCK = 100


# -- the operator's switch and the stack's parts --------------------------------------------


@dataclass
class IntakeSwitch:
    """``orders-ops`` itself (ops.cli.main), pointed at the local stack's moto endpoint."""

    running: Running

    def __call__(self, command: str) -> dict[str, Any]:
        resources = self.running.stack.resources
        assert resources is not None
        out, err = io.StringIO(), io.StringIO()
        argv = [
            "--endpoint-url",
            resources.endpoint_url,
            "--region",
            resources.region,
            "--intake-function",
            resources.function("intake").name,
            "--json",
            "intake",
            command,
        ]
        code = orders_ops(argv, out=out, err=err)
        assert code == 0, (command, out.getvalue(), err.getvalue())
        report: dict[str, Any] = json.loads(out.getvalue())
        return report

    def pause(self) -> dict[str, Any]:
        report = self("pause")
        self._wait_for_poller(enabled=False)
        return report

    def resume(self) -> dict[str, Any]:
        report = self("resume")
        self._wait_for_poller(enabled=True)
        return report

    def _wait_for_poller(self, *, enabled: bool) -> None:
        """The local platform follows the mapping's State within its poll interval."""
        poller = self.running.stack.poller
        assert poller is not None
        deadline = time.monotonic() + 10
        while poller.enabled != enabled:
            assert time.monotonic() < deadline, f"the poller never followed enabled={enabled}"
            time.sleep(0.05)
        while not enabled and poller.in_flight:
            assert time.monotonic() < deadline, "a batch stayed in flight after the pause"
            time.sleep(0.05)


@pytest.fixture
def intake(running: Running) -> Iterator[IntakeSwitch]:
    # Nothing else in flight: the queue holds only what the test sends.
    assert running.stack.wait_until_settled(timeout_s=60)
    switch = IntakeSwitch(running)
    try:
        yield switch
    finally:
        # Never leave the shared stack paused, whatever the test did.
        if switch("status")["paused"]:
            switch.resume()


@dataclass
class Backoff:
    """The Step Functions retry waits requested since the fixture started (F03's recorder)."""

    sleep: ScaledRetrySleep
    first: int

    def waits(self) -> list[float]:
        return self.sleep.requested[self.first :]


@pytest.fixture
def production_backoff(running: Running, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backoff]:
    """Unscaled Step Functions retry waits, with full jitter's draw pinned to its bound."""
    aws = running.stack.aws
    assert aws is not None
    sleep = aws.retry_sleep
    before_scale = sleep.scale
    # moto draws FULL jitter with random.uniform(0, bound) in this module.
    monkeypatch.setattr(
        jitter_strategy_decl, "random", SimpleNamespace(uniform=lambda _low, high: high)
    )
    sleep.scale = 1.0
    try:
        yield Backoff(sleep, len(sleep.requested))
    finally:
        sleep.scale = before_scale


def fresh_sku(running: Running, stock: int = STOCK) -> str:
    sku = f"F19-{uuid.uuid4().hex[:10].upper()}"
    with running.stack.db() as conn:
        conn.execute(
            "INSERT INTO inventory (sku, name, unit_price_cents, available)"
            " VALUES (%s, %s, %s, %s)",
            (sku, f"F19 {sku}", 700, stock),
        )
    return sku


def available(running: Running, sku: str) -> int:
    with running.stack.db() as conn:
        row = conn.execute("SELECT available FROM inventory WHERE sku = %s", (sku,)).fetchone()
    assert row is not None
    return int(row[0])


def post_orders(running: Running, sku: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        status, body = running.api.post_order(
            running.alice,
            {
                "items": [{"sku": sku, "quantity": 1}],
                "payment_method": "pm_card_visa",
                "currency": "EUR",
            },
            new_key(),
        )
        assert status == 202, body
        ids.append(body["order_id"])
    return ids


def statuses(running: Running, order_ids: list[str], timeout_s: float = 120) -> dict[str, str]:
    """Each order's final status, read from PostgreSQL once every one is terminal."""
    deadline = time.monotonic() + timeout_s
    while True:
        with running.stack.db() as conn:
            rows = dict(
                conn.execute(
                    "SELECT order_id::text, status FROM orders WHERE order_id = ANY(%s::uuid[])",
                    (order_ids,),
                ).fetchall()
            )
        if len(rows) == len(order_ids) and set(rows.values()) <= TERMINAL:
            return rows
        assert time.monotonic() < deadline, f"orders not terminal after {timeout_s} s: {rows}"
        time.sleep(0.2)


def executions(running: Running, order_ids: list[str]) -> dict[str, int]:
    names = [e["name"] for e in running.stack.executions()]
    return {order_id: names.count(f"order-{order_id}") for order_id in order_ids}


def charges(running: Running, order_id: str) -> int:
    return len(running.stack.provider.ledger.charges_for(order_id))


def queue_depth(running: Running) -> tuple[int, int]:
    """(visible, in flight) of the orders queue, as ``intake status`` reads them."""
    aws, resources = running.stack.aws, running.stack.resources
    assert aws is not None
    assert resources is not None
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=resources.orders_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def needs_attention(running: Running) -> int:
    """Messages in the needs-attention queue (a compensation that gave up, F08)."""
    aws, resources = running.stack.aws, running.stack.resources
    assert aws is not None
    assert resources is not None
    attrs = aws.client("sqs").get_queue_attributes(
        QueueUrl=resources.needs_attention_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attrs.values())


@dataclass
class PaymentStep:
    """One payment function's environments, attempts, failures and breaker transitions, read
    from the invocation counter and the function's own log lines since the test started."""

    running: Running
    handler_module: str

    def __post_init__(self) -> None:
        resources = self.running.stack.resources
        assert resources is not None
        fn = resources.function(self.handler_module)
        self.logical_id, self.name = fn.logical_id, fn.name
        self.log_mark = len(self.running.logs.records)

    def attempts(self, order_id: str) -> int:
        counts = self.running.stack.counter.by_order.get(order_id)
        return 0 if counts is None else counts[self.logical_id]

    def environments(self) -> int:
        return len(self.running.stack.pools[self.logical_id].workers)

    def _lines(self, message: str) -> list[dict[str, Any]]:
        found = []
        for record in self.running.logs.records[self.log_mark :]:
            if record.function_name == self.name and message in record.line:
                line = json.loads(record.line)
                if line.get("message") == message:
                    found.append(line)
        return found

    def failures(self) -> tuple[int, int]:
        """(attempts whose request reached the provider and got 503, attempts that failed
        fast on an open breaker), from each failed attempt's logged exception."""
        reached = fast = 0
        for line in self._lines("saga step failed"):
            # The attempt that trips a breaker reached the provider: its 503 is in the chain.
            exception = str(line.get("exception", ""))
            if "payment provider answered 503" in exception:
                reached += 1
            elif "circuit is open; failing fast" in exception:
                fast += 1
        return reached, fast

    def breaker_transitions(self) -> list[tuple[str, str]]:
        return [
            (str(line["from"]), str(line["to"]))
            for line in self._lines("payment circuit breaker changed state")
        ]

    def opened_environments(self) -> int:
        """Environments whose breaker opened. While the provider is down an environment
        leaves "closed" once (only a successful call closes it again), so each
        closed -> open is a different environment."""
        return self.breaker_transitions().count(("closed", "open"))


def wait_for(condition: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


def stage_orders(running: Running, intake: IntakeSwitch, sku: str, count: int) -> list[str]:
    """Orders accepted while the intake is paused: they start together on resume."""
    intake.pause()
    order_ids = post_orders(running, sku, count)
    wait_for(lambda: queue_depth(running) == (count, 0), f"{count} messages in the queue")
    return order_ids


# -- the intake switch ---------------------------------------------------------------------


def test_f19_intake_pause_holds_orders_in_the_queue_and_resume_drains_each_once(
    running: Running, intake: IntakeSwitch
) -> None:
    """Given a running intake, when the operator runs `orders-ops intake pause` and orders
    arrive, then the API still accepts them but nothing consumes them: every message waits in
    the queue (depth == sent), no Intake invocation, no execution, no charge. When the
    operator runs `intake resume`, every held order completes exactly once.

    The real CLI flips the real switch: the mapping's State in moto, which the local poller
    follows like Lambda's pollers follow the service's.

    Fails if: `intake pause` stops disabling the mapping (ops/intake.py switch), the local
    stack stops creating the mapping in moto or the poller stops following its State
    (devstack/aws.py _create_event_source_mappings, devstack/event_source.py _follow_state),
    or a held message is lost or processed twice on resume.
    """
    poller = running.stack.poller
    assert poller is not None
    sku = fresh_sku(running)
    held = 4

    # Given / When: paused, then orders arrive
    paused = intake.pause()
    invocations_before = poller.stats.invocations
    order_ids = post_orders(running, sku, held)
    time.sleep(1.5)  # three state polls and a long poll: a live mapping would have taken them

    # Then: held safely, untouched
    status = intake("status")
    assert paused["state"] == "Disabled"
    assert status["paused"] is True
    assert (status["visible"], status["in_flight"]) == (held, 0)
    assert queue_depth(running) == (held, 0)
    assert poller.stats.invocations == invocations_before
    assert executions(running, order_ids) == dict.fromkeys(order_ids, 0)
    assert all(charges(running, order_id) == 0 for order_id in order_ids)
    with running.stack.db() as conn:
        received = conn.execute(
            "SELECT count(*) FROM orders WHERE order_id = ANY(%s::uuid[]) AND status = 'RECEIVED'",
            (order_ids,),
        ).fetchone()
    assert received == (held,)

    # When resumed
    resumed = intake.resume()

    # Then every held order completes exactly once and the queue is empty
    assert resumed["state"] == "Enabled"
    assert statuses(running, order_ids) == dict.fromkeys(order_ids, "CONFIRMED")
    assert executions(running, order_ids) == dict.fromkeys(order_ids, 1)
    assert [charges(running, order_id) for order_id in order_ids] == [1] * held
    assert available(running, sku) == STOCK - held
    wait_for(lambda: queue_depth(running) == (0, 0), "an empty orders queue", timeout_s=30)
    assert intake("status")["paused"] is False


# -- the provider goes down ----------------------------------------------------------------


def breaker_bound(environments: int, outage_s: float) -> int:
    """Requests an outage can get past one function's breakers: fail_max failures per
    environment to open it, then at most one probe per environment per open period."""
    probes = environments * math.ceil(outage_s / BREAKER_RESET_S)
    return BREAKER_FAIL_MAX * environments + probes


def test_f19_a_short_outage_opens_the_breakers_and_every_order_completes_once(
    running: Running, intake: IntakeSwitch, production_backoff: Backoff
) -> None:
    """Given orders in flight and the provider down, when TakePayment's breaker has opened
    and attempts fail fast, and the provider comes back (well within the payment step's
    retry budget), then every order still completes exactly once: CONFIRMED, one charge, one
    execution. During the outage at most fail_max attempts per environment (plus one probe
    per environment per open period) reached the provider, the others failed fast, and the
    saga waited its configured, growing backoff between attempts.

    (Which environment serves a retry is the pool's choice, most recently used first, as
    Lambda's: the wait is for the first open breaker, the bound counts every environment.)

    Fails if: the breaker is removed or stops opening at fail_max (HttpPaymentGateway), an
    open breaker is not surfaced as TransientError (the saga would not retry it), the saga's
    Retry on TakePayment loses its backoff, or the breaker's open period outlives the saga's
    payment retries (with PaymentSettings.breaker_reset_s back at 30 s, the orders whose
    retries meet an open breaker fail; StageConfig now rejects that value).
    """
    take_payment = PaymentStep(running, "take_payment")
    sku = fresh_sku(running)
    order_ids = stage_orders(running, intake, sku, count=10)
    provider = running.stack.provider

    # Given the provider down while the held orders start together
    provider.faults.set(down=True)
    down_at = time.monotonic()
    intake.resume()
    wait_for(
        lambda: take_payment.opened_environments() and take_payment.failures()[1],
        "TakePayment's breaker to open and fail attempts fast",
    )

    # When the provider comes back
    provider.faults.set(down=False)
    outage_s = time.monotonic() - down_at

    # Then every order completes exactly once
    assert statuses(running, order_ids) == dict.fromkeys(order_ids, "CONFIRMED")
    assert executions(running, order_ids) == dict.fromkeys(order_ids, 1)
    assert [charges(running, order_id) for order_id in order_ids] == [1] * len(order_ids)
    assert available(running, sku) == STOCK - len(order_ids)
    # ... the breakers bounded what reached the provider; the other attempts failed fast
    # (503s only while the provider was down; fast failures also until each breaker's probe)
    reached, failed_fast = take_payment.failures()
    environments = take_payment.environments()
    assert 0 < reached <= breaker_bound(environments, outage_s), (reached, outage_s)
    assert failed_fast > 0
    attempts = sum(take_payment.attempts(order_id) for order_id in order_ids)
    assert attempts == len(order_ids) + reached + failed_fast
    assert 1 <= take_payment.opened_environments() <= environments
    # ... and the saga backed off with its configured waits, growing between attempts
    waits = production_backoff.waits()
    bounds = [float(bound) for bound in RETRY.max_delays_s()]
    assert len(waits) == reached + failed_fast  # one wait before each retry
    assert set(waits) <= set(bounds), waits
    per_bound = [waits.count(bound) for bound in bounds]
    assert per_bound == sorted(per_bound, reverse=True), per_bound


def test_f19_an_outage_beyond_the_retry_budget_fails_orders_cleanly_without_charges(
    running: Running, intake: IntakeSwitch, production_backoff: Backoff
) -> None:
    """Given orders in flight and the provider down until every order has used all of its
    TakePayment attempts, when the provider comes back, then every order is FAILED and
    compensated cleanly: no charge, its stock released, one execution, nothing in the
    needs-attention queue. TakePayment's breakers let only a bounded number of attempts
    reach the provider: most of the attempts failed fast.

    Fails if: the saga retries TakePayment without bound (orders would never fail), an open
    breaker stops failing fast (every attempt would reach the provider), a compensation is
    skipped (stock stays reserved) or RefundPayment cannot get past the breaker it opened
    during the outage before its own retries run out (orders would land in needs-attention).
    """
    take_payment = PaymentStep(running, "take_payment")
    refund_payment = PaymentStep(running, "refund_payment")
    sku = fresh_sku(running)
    order_ids = stage_orders(running, intake, sku, count=10)
    provider = running.stack.provider
    attention_before = needs_attention(running)

    # Given the provider down until every order has moved on to its compensation
    provider.faults.set(down=True)
    down_at = time.monotonic()
    intake.resume()
    wait_for(
        lambda: all(refund_payment.attempts(order_id) for order_id in order_ids),
        "every order to exhaust TakePayment and start compensating",
    )

    # When the provider comes back
    provider.faults.set(down=False)
    outage_s = time.monotonic() - down_at
    reached, failed_fast = take_payment.failures()

    # Then every order failed cleanly: nothing charged, stock back, nobody paged
    assert statuses(running, order_ids) == dict.fromkeys(order_ids, "FAILED")
    assert [charges(running, order_id) for order_id in order_ids] == [0] * len(order_ids)
    assert available(running, sku) == STOCK
    assert executions(running, order_ids) == dict.fromkeys(order_ids, 1)
    assert needs_attention(running) == attention_before
    # ... every TakePayment attempt failed, and most of them never reached the provider
    attempts = [take_payment.attempts(order_id) for order_id in order_ids]
    assert attempts == [RETRY.total_attempts] * len(order_ids)
    assert reached + failed_fast == sum(attempts)
    assert reached <= breaker_bound(take_payment.environments(), outage_s), (reached, outage_s)
    assert failed_fast > reached, (reached, failed_fast)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_f19_a_breaker_that_outlives_the_saga_retries_is_rejected_by_the_config(stage: str) -> None:
    """Given a stage's config, when the payment breaker's open period is raised to the
    expected backoff of the payment step's retries (or to the 30 s it once was), then the
    config refuses it; the shipped value is below it.

    Fails if: the check in StageConfig.__post_init__ is removed or compares the wrong budget.
    """
    config = stage_config(stage)
    expected_backoff = payment_expected_backoff_s(config)
    assert config.payment.breaker_reset_s < expected_backoff
    assert expected_backoff == sum(config.retry.max_delays_s()) / 2
    for reset_s in (math.ceil(expected_backoff), 30):
        payment = dataclasses.replace(config.payment, breaker_reset_s=reset_s)
        with pytest.raises(ConfigError, match="breaker_reset_s"):
            dataclasses.replace(config, payment=payment)
