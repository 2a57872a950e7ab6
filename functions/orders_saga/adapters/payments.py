"""Client for the external payment provider's HTTP API (F07, F09, F19).

- Every charge and refund carries an ``Idempotency-Key`` derived from the order, so a retry
  after a lost response returns the original charge instead of charging again (F09).
- Explicit connect/read timeouts and no urllib3 retries: Step Functions owns retries (F03, F07).
- Errors are classified: a decline is a business outcome, 5xx/429/timeouts are transient.
- A circuit breaker (per execution environment) fails fast while the provider is down, and
  surfaces that as a transient error so the saga backs off instead of piling up (F19).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol
from urllib.parse import urlencode

import pybreaker
import urllib3

from orders_saga.adapters.secrets import secret_string
from orders_saga.config import PaymentSettings, payment_settings
from orders_saga.errors import PaymentDeclined, TransientError
from orders_saga.observability import logger, metrics


class PaymentProviderError(RuntimeError):
    """The provider rejected our request as malformed: a bug on our side, never retried."""


@dataclass(frozen=True)
class Charge:
    charge_id: str
    amount_cents: int


class PaymentGateway(Protocol):
    def charge(
        self, *, reference: str, amount_cents: int, currency: str, payment_method: str, key: str
    ) -> Charge: ...

    def refund(self, *, charge_id: str, key: str) -> str: ...

    def find_charge(self, *, reference: str) -> Charge | None: ...


class _BreakerMetrics(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        logger.warning(
            "payment circuit breaker changed state",
            extra={"from": getattr(old_state, "name", str(old_state)), "to": new_state.name},
        )
        if new_state.name == pybreaker.STATE_OPEN:
            metrics.add_metric(name="PaymentCircuitOpened", unit="Count", value=1)


class HttpPaymentGateway:
    def __init__(self, settings: PaymentSettings, http: urllib3.PoolManager | None = None) -> None:
        self._settings = settings
        self._http = http or urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=settings.connect_timeout_s, read=settings.read_timeout_s
            ),
            retries=False,
            maxsize=2,
        )
        # Declines are answers, not failures: they must not open the breaker.
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_s,
            exclude=[PaymentDeclined, PaymentProviderError],
            listeners=[_BreakerMetrics()],
            name="payment-provider",
        )

    def _headers(self, key: str | None, *, refresh_key: bool = False) -> dict[str, str]:
        api_key = secret_string(self._settings.api_key_secret_arn, refresh=refresh_key)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        return headers

    def _send(self, method: str, path: str, body: dict[str, Any] | None, key: str | None) -> Any:
        url = f"{self._settings.base_url}{path}"
        payload = json.dumps(body).encode() if body is not None else None
        for refresh_key in (False, True):
            started = time.monotonic()
            try:
                response = self._http.request(
                    method, url, body=payload, headers=self._headers(key, refresh_key=refresh_key)
                )
            except urllib3.exceptions.HTTPError as error:
                # Timeout or dropped connection: the charge may or may not have happened. The
                # retry sends the same Idempotency-Key, so it cannot charge twice (F09).
                raise TransientError(f"payment provider unreachable: {error!r}") from error
            elapsed_ms = (time.monotonic() - started) * 1000
            metrics.add_metric(name="PaymentLatency", unit="Milliseconds", value=elapsed_ms)
            if response.status == 401 and not refresh_key:
                continue  # the key may have been rotated (F14): re-read the secret once
            return self._classify(response)
        raise PaymentProviderError("payment provider rejected our API key")

    @staticmethod
    def _classify(response: urllib3.BaseHTTPResponse) -> Any:
        status = response.status
        try:
            data = response.json() if response.data else {}
        except ValueError:
            data = {}
        if status in (200, 201):
            return data
        if status == 402:
            message = data.get("error", {}).get("message", "declined")
            raise PaymentDeclined(message)
        if status == 404:
            return None
        if status == 429 or status >= 500:
            raise TransientError(f"payment provider answered {status}")
        raise PaymentProviderError(f"payment provider answered {status}: {data}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None, key: str | None) -> Any:
        try:
            return self.breaker.call(self._send, method, path, body, key)
        except pybreaker.CircuitBreakerError as error:
            raise TransientError("payment provider circuit is open; failing fast") from error

    def charge(
        self, *, reference: str, amount_cents: int, currency: str, payment_method: str, key: str
    ) -> Charge:
        body = {
            "amount_cents": amount_cents,
            "currency": currency,
            "payment_method": payment_method,
            "reference": reference,
        }
        data = self._call("POST", "/v1/charges", body, key)
        return Charge(charge_id=str(data["charge_id"]), amount_cents=int(data["amount_cents"]))

    def refund(self, *, charge_id: str, key: str) -> str:
        data = self._call("POST", "/v1/refunds", {"charge_id": charge_id}, key)
        if data is None:
            raise PaymentProviderError(f"provider does not know charge {charge_id}")
        return str(data["refund_id"])

    def find_charge(self, *, reference: str) -> Charge | None:
        data = self._call("GET", f"/v1/charges?{urlencode({'reference': reference})}", None, None)
        charges = (data or {}).get("data", [])
        if not charges:
            return None
        first = charges[0]
        return Charge(charge_id=str(first["charge_id"]), amount_cents=int(first["amount_cents"]))


@cache
def payment_gateway() -> HttpPaymentGateway:
    return HttpPaymentGateway(payment_settings())
