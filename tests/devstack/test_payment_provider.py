"""The fake payment provider honours the contract in docs/architecture.md, and its faults
produce exactly the side effects the saga's tests rely on (F01, F09, F19)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from devstack.payment_provider import PaymentProvider

CHARGE = {
    "amount_cents": 4200,
    "currency": "EUR",
    "payment_method": "pm_card_visa",
    "reference": "order-1",
}


def call(
    http: urllib3.PoolManager,
    provider: PaymentProvider,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    api_key: str | None = "",
    **kwargs: Any,
) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/json"}
    if api_key is not None:  # "" means the provider's own key; None sends no header
        headers["Authorization"] = f"Bearer {api_key or provider.api_key}"
    if key is not None:
        headers["Idempotency-Key"] = key
    data = json.dumps(body).encode() if body is not None else None
    return http.request(method, provider.base_url + path, body=data, headers=headers, **kwargs)


def charge(
    http: urllib3.PoolManager,
    provider: PaymentProvider,
    key: str = "order-1:charge",
    **overrides: Any,
) -> urllib3.BaseHTTPResponse:
    return call(http, provider, "POST", "/v1/charges", {**CHARGE, **overrides}, key=key)


# --------------------------------------------------------------------------- charges


def test_charge_succeeds_and_is_recorded(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    response = charge(payment_http, payment_provider)

    assert response.status == 201
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["charge_id"].startswith("ch_")
    assert (body["amount_cents"], body["currency"], body["reference"]) == (4200, "EUR", "order-1")
    [recorded] = payment_provider.ledger.charges
    assert recorded.charge_id == body["charge_id"]
    assert recorded.idempotency_key == "order-1:charge"
    assert payment_provider.ledger.charge_counts() == {"order-1": 1}


def test_declined_card_gets_402_and_moves_no_money(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    response = charge(payment_http, payment_provider, payment_method="pm_card_declined")

    assert response.status == 402
    assert response.json()["error"]["code"] == "card_declined"
    assert response.json()["error"]["message"]
    assert payment_provider.ledger.charges == []
    assert len(payment_provider.ledger.declines) == 1


def test_duplicate_charge_request_replays_first_response_and_charges_once(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    first = charge(payment_http, payment_provider)

    second = charge(payment_http, payment_provider)

    assert second.status == first.status == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(payment_provider.ledger.charges) == 1


def test_replayed_decline_stays_a_decline(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    charge(payment_http, payment_provider, payment_method="pm_card_declined")

    again = charge(payment_http, payment_provider, payment_method="pm_card_declined")

    assert again.status == 402
    assert len(payment_provider.ledger.declines) == 1


def test_concurrent_duplicates_charge_once(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker() -> None:
        response = charge(payment_http, payment_provider)
        with lock:
            results.append((response.status, response.json()["charge_id"]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 8
    assert {status for status, _ in results} == {201}
    assert len({charge_id for _, charge_id in results}) == 1
    assert len(payment_provider.ledger.charges) == 1


def test_same_key_with_different_body_is_rejected_422(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    charge(payment_http, payment_provider)

    response = charge(payment_http, payment_provider, amount_cents=9999)

    assert response.status == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert len(payment_provider.ledger.charges) == 1


def test_missing_idempotency_key_is_rejected_without_side_effect(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    response = call(payment_http, payment_provider, "POST", "/v1/charges", CHARGE)

    assert response.status == 400
    assert response.json()["error"]["code"] == "idempotency_key_required"
    assert payment_provider.ledger.charges == []


def test_invalid_charge_is_rejected_and_key_stays_usable(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    bad = charge(payment_http, payment_provider, amount_cents=-1)
    good = charge(payment_http, payment_provider)

    assert bad.status == 400
    assert good.status == 201
    assert len(payment_provider.ledger.charges) == 1


@pytest.mark.parametrize("api_key", ["sk_wrong", None])
def test_api_key_is_required(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager, api_key: str | None
) -> None:
    response = call(
        payment_http, payment_provider, "POST", "/v1/charges", CHARGE, key="k", api_key=api_key
    )

    assert response.status == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert payment_provider.ledger.charges == []


# --------------------------------------------------------------------------- refunds and lookup


def test_charge_is_refunded_once(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    charge_id = charge(payment_http, payment_provider).json()["charge_id"]

    first = call(
        payment_http, payment_provider, "POST", "/v1/refunds", {"charge_id": charge_id}, key="r1"
    )
    replay = call(
        payment_http, payment_provider, "POST", "/v1/refunds", {"charge_id": charge_id}, key="r1"
    )
    second = call(
        payment_http, payment_provider, "POST", "/v1/refunds", {"charge_id": charge_id}, key="r2"
    )

    assert first.status == 201
    assert first.json()["status"] == "succeeded"
    assert first.json()["charge_id"] == charge_id
    assert first.json()["refund_id"].startswith("re_")
    assert replay.status == 201
    assert replay.json() == first.json()
    assert second.status == 409
    assert second.json()["error"]["code"] == "charge_already_refunded"
    assert len(payment_provider.ledger.refunds) == 1
    assert payment_provider.ledger.refund_counts() == {"order-1": 1}


def test_refund_of_unknown_charge_is_404(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    response = call(
        payment_http, payment_provider, "POST", "/v1/refunds", {"charge_id": "ch_nope"}, key="r"
    )

    assert response.status == 404
    assert payment_provider.ledger.refunds == []


def test_charges_are_listed_by_reference(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    mine = charge(payment_http, payment_provider).json()
    charge(payment_http, payment_provider, key="order-2:charge", reference="order-2")

    response = call(payment_http, payment_provider, "GET", "/v1/charges?reference=order-1")

    assert response.status == 200
    assert response.json() == {"data": [mine]}


# --------------------------------------------------------------------------- faults


def test_F09_lost_charge_response_charges_once_and_retry_replays(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    payment_provider.faults.set(lose_next_charge_responses=1)

    with pytest.raises(ProtocolError):
        charge(payment_http, payment_provider)

    [charged] = payment_provider.ledger.charges
    retry = charge(payment_http, payment_provider)
    assert retry.status == 201
    assert retry.json()["charge_id"] == charged.charge_id
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(payment_provider.ledger.charges) == 1
    found = call(payment_http, payment_provider, "GET", "/v1/charges?reference=order-1")
    assert [c["charge_id"] for c in found.json()["data"]] == [charged.charge_id]


def test_latency_beyond_client_timeout_is_ambiguous_but_charges_once(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    payment_provider.faults.set(latency_ms=600)

    with pytest.raises(ReadTimeoutError):
        call(
            payment_http,
            payment_provider,
            "POST",
            "/v1/charges",
            CHARGE,
            key="order-1:charge",
            timeout=urllib3.Timeout(connect=1.0, read=0.2),
        )

    # The side effect is settled before the provider answers, so this is deterministic.
    assert len(payment_provider.ledger.charges) == 1


def test_injected_503_has_no_side_effect(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    payment_provider.faults.set(fail_next=2)

    failed = [charge(payment_http, payment_provider).status for _ in range(2)]
    assert payment_provider.ledger.charges == []
    succeeded = charge(payment_http, payment_provider)

    assert failed == [503, 503]
    assert succeeded.status == 201
    assert len(payment_provider.ledger.charges) == 1
    assert payment_provider.ledger.requests_received == 3
    assert payment_provider.faults.snapshot().fail_next == 0


def test_down_switch_over_http_fails_everything_until_restored(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    down = call(payment_http, payment_provider, "POST", "/_admin/faults", {"down": True})
    assert down.json()["down"] is True

    during = [
        charge(payment_http, payment_provider).status,
        call(payment_http, payment_provider, "GET", "/v1/charges?reference=order-1").status,
    ]
    call(payment_http, payment_provider, "POST", "/_admin/faults", {"down": False})
    after = charge(payment_http, payment_provider)

    assert during == [503, 503]
    assert after.status == 201
    assert len(payment_provider.ledger.charges) == 1


def test_admin_ledger_and_reset(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    charge(payment_http, payment_provider)
    call(payment_http, payment_provider, "POST", "/_admin/faults", {"latency_ms": 5})

    ledger = call(payment_http, payment_provider, "GET", "/_admin/ledger").json()
    reset = call(payment_http, payment_provider, "POST", "/_admin/reset", {})

    assert ledger["charge_counts"] == {"order-1": 1}
    assert ledger["requests_received"] == 1  # admin calls are not counted
    assert len(ledger["charges"]) == 1
    assert reset.status == 200
    assert payment_provider.ledger.charges == []
    assert payment_provider.faults.snapshot().latency_ms == 0
    # After a reset the old key is free again: a fresh charge, not a replay.
    assert "Idempotent-Replayed" not in charge(payment_http, payment_provider).headers


def test_admin_rejects_unknown_fault(
    payment_provider: PaymentProvider, payment_http: urllib3.PoolManager
) -> None:
    response = call(payment_http, payment_provider, "POST", "/_admin/faults", {"explode": 1})

    assert response.status == 400
    assert payment_provider.faults.snapshot() == type(payment_provider.faults.snapshot())()


def test_stopped_provider_refuses_connections(payment_http: urllib3.PoolManager) -> None:
    provider = PaymentProvider()
    base_url = provider.start()
    assert charge(payment_http, provider).status == 201  # leaves a keep-alive connection

    provider.stop()

    with pytest.raises(urllib3.exceptions.HTTPError):
        payment_http.request("GET", base_url + "/v1/charges?reference=order-1")
