"""The payment adapter against the fake provider: idempotency keys, timeouts, breaker (F07, F09, F19)."""

from __future__ import annotations

import time

import pybreaker
import pytest
from orders_saga.adapters.payments import HttpPaymentGateway
from orders_saga.errors import PaymentDeclined, TransientError

from devstack.payment_provider import PaymentProvider
from tests.fixtures import AwsResources


@pytest.fixture
def gateway(function_env: AwsResources) -> HttpPaymentGateway:
    from orders_saga.adapters.payments import payment_gateway

    return payment_gateway()


def charge(
    gateway: HttpPaymentGateway, *, key: str = "order-1:charge", pm: str = "pm_card_visa"
) -> str:
    return gateway.charge(
        reference="order-1", amount_cents=500, currency="EUR", payment_method=pm, key=key
    ).charge_id


def test_a_retried_charge_with_the_same_key_charges_once(
    gateway: HttpPaymentGateway, payment_provider: PaymentProvider
) -> None:
    assert charge(gateway) == charge(gateway)
    assert len(payment_provider.ledger.charges) == 1


def test_a_decline_is_a_business_outcome(
    gateway: HttpPaymentGateway, payment_provider: PaymentProvider
) -> None:
    with pytest.raises(PaymentDeclined):
        charge(gateway, pm="pm_card_declined")
    assert payment_provider.ledger.charges == []
    assert gateway.breaker.current_state == pybreaker.STATE_CLOSED


def test_a_lost_response_is_transient_and_the_retry_returns_the_original_charge(
    gateway: HttpPaymentGateway, payment_provider: PaymentProvider
) -> None:
    """Given the provider charges and drops the response, the retry must not charge again (F09)."""
    payment_provider.faults.set(lose_next_charge_responses=1)

    with pytest.raises(TransientError):
        charge(gateway)
    charge_id = charge(gateway)

    assert [c.charge_id for c in payment_provider.ledger.charges] == [charge_id]


def test_a_hung_provider_times_out_at_the_configured_bound(
    gateway: HttpPaymentGateway, payment_provider: PaymentProvider
) -> None:
    payment_provider.faults.set(latency_ms=3000)  # PAYMENT_READ_TIMEOUT_S is 1.0 in tests

    started = time.monotonic()
    with pytest.raises(TransientError):
        charge(gateway)

    assert time.monotonic() - started < 2.5


def test_the_breaker_opens_and_fails_fast_while_the_provider_is_down(
    gateway: HttpPaymentGateway, payment_provider: PaymentProvider
) -> None:
    """Given the provider is down, after 3 failures (the test's fail max) calls stop reaching it (F19)."""
    payment_provider.faults.set(down=True)

    for attempt in range(10):
        with pytest.raises(TransientError):
            charge(gateway, key=f"order-{attempt}:charge")

    assert payment_provider.ledger.requests_received == 3
    assert gateway.breaker.current_state == pybreaker.STATE_OPEN
