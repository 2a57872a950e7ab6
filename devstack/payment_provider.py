"""A fake external payment provider for the local run and the tests.

It implements the provider API of docs/architecture.md over real HTTP on 127.0.0.1, so the
real adapter (timeouts, retries, circuit breaker) is exercised unchanged, and it keeps an
in-process ledger so tests can count side effects instead of trusting responses.

Behaviour worth knowing (it mirrors real providers):

* ``Idempotency-Key`` is required on POSTs. The first *processed* result (201, or a 402
  decline) is stored and replayed for the same key, with ``Idempotent-Replayed: true``; the same
  key with a different method, path or body gets 422. Requests rejected before processing (400,
  401, 404, 409, injected 503) are not stored, so the client may retry them.
* A charge can be refunded once; a second refund with a new key gets 409.

Fault injection (``provider.faults`` in-process, or ``POST /_admin/faults``):

* ``latency_ms``: sleep after processing, before responding. The side effect has already
  happened when a client times out, which is exactly the ambiguous failure of F09, and the
  ledger is settled by the time the client gives up (no racy assertions).
* ``fail_next``: the next N API requests get 503 without side effects (F19 transient).
* ``lose_next_charge_responses``: the next N charge requests are processed (charged, or
  replayed) and then the connection is closed without any response (F09).
* ``down``: every API request gets 503 until switched back (F19 outage).

Random faults (``provider.faults.set_random(RandomFaults(...))``, in-process only), for load
and chaos runs where every request rolls its own dice (seeded, so a run is repeatable):

* ``unavailable_rate``: an API request gets 503 before processing (no side effect).
* ``lost_response_rate``: a charge or refund is processed, then the connection is closed
  without a response (F09; the same as a handler crashing after its side effect).
* ``timeout_rate``: a charge or refund is processed, then the provider holds the response for
  ``timeout_delay_ms`` and closes the connection (the client's read timeout fires first).

``provider.faults.injected()`` counts what the random faults did, per kind.

Admin endpoints, for a provider running in another process: ``GET /_admin/ledger``,
``GET``/``POST /_admin/faults`` (a JSON object with any of the switches above),
``POST /_admin/reset`` (empty ledger, idempotency store and faults). They need no API key,
bypass faults and are not counted: they are the test's control channel, not the provider.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "sk_test_orders_saga_local"
DECLINED_PAYMENT_METHOD = "pm_card_declined"
_MAX_BODY_BYTES = 64 * 1024  # the real API's requests are tiny; refuse anything larger

JsonObject = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Charge:
    charge_id: str
    amount_cents: int
    currency: str
    payment_method: str
    reference: str
    idempotency_key: str
    status: str = "succeeded"
    created_at: str = field(default_factory=_now)

    def to_api(self) -> JsonObject:
        return {
            "charge_id": self.charge_id,
            "status": self.status,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class Decline:
    """A charge attempt the provider refused (no money moved)."""

    amount_cents: int
    currency: str
    payment_method: str
    reference: str
    idempotency_key: str
    created_at: str = field(default_factory=_now)


@dataclass(frozen=True)
class Refund:
    refund_id: str
    charge_id: str
    idempotency_key: str
    status: str = "succeeded"
    created_at: str = field(default_factory=_now)

    def to_api(self) -> JsonObject:
        return {"refund_id": self.refund_id, "charge_id": self.charge_id, "status": self.status}


@dataclass(frozen=True)
class StoredResponse:
    """The first response for an idempotency key, and what the request looked like."""

    fingerprint: str
    status: int
    body: JsonObject


# --------------------------------------------------------------------------- ledger


class Ledger:
    """Everything the provider did, safe to read from the test thread while it serves.

    Readers get copies, never the live containers.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._charges: dict[str, Charge] = {}
        self._declines: list[Decline] = []
        self._refunds: dict[str, Refund] = {}
        self._responses: dict[str, StoredResponse] = {}
        self._requests_received = 0

    @property
    def charges(self) -> list[Charge]:
        with self.lock:
            return list(self._charges.values())

    @property
    def declines(self) -> list[Decline]:
        with self.lock:
            return list(self._declines)

    @property
    def refunds(self) -> list[Refund]:
        with self.lock:
            return list(self._refunds.values())

    @property
    def requests_received(self) -> int:
        """API requests that reached the server (admin calls excluded, failed ones included)."""
        with self.lock:
            return self._requests_received

    def charges_for(self, reference: str) -> list[Charge]:
        with self.lock:
            return [c for c in self._charges.values() if c.reference == reference]

    def charge_counts(self) -> dict[str, int]:
        """Succeeded charges per reference (order id): any value above 1 is a double charge."""
        with self.lock:
            return dict(Counter(c.reference for c in self._charges.values()))

    def refund_counts(self) -> dict[str, int]:
        """Refunds per reference of the refunded charge."""
        with self.lock:
            return dict(
                Counter(self._charges[r.charge_id].reference for r in self._refunds.values())
            )

    def snapshot(self) -> JsonObject:
        with self.lock:
            return {
                "charges": [asdict(c) for c in self._charges.values()],
                "declines": [asdict(d) for d in self._declines],
                "refunds": [asdict(r) for r in self._refunds.values()],
                "charge_counts": self.charge_counts(),
                "refund_counts": self.refund_counts(),
                "requests_received": self._requests_received,
            }

    def reset(self) -> None:
        with self.lock:
            self._charges.clear()
            self._declines.clear()
            self._refunds.clear()
            self._responses.clear()
            self._requests_received = 0

    # -- used by the server, always under self.lock --------------------------------

    def _count_request(self) -> None:
        with self.lock:
            self._requests_received += 1

    def _refund_of(self, charge_id: str) -> Refund | None:
        return next((r for r in self._refunds.values() if r.charge_id == charge_id), None)


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class FaultSettings:
    latency_ms: int = 0
    fail_next: int = 0
    lose_next_charge_responses: int = 0
    down: bool = False


@dataclass(frozen=True)
class RandomFaults:
    """Per-request fault probabilities (0..1); see the module docstring."""

    unavailable_rate: float = 0.0
    lost_response_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_delay_ms: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        rates = (self.unavailable_rate, self.lost_response_rate, self.timeout_rate)
        if not all(0.0 <= r <= 1.0 for r in rates):
            raise ValueError("fault rates must be within 0..1")
        if self.timeout_delay_ms < 0:
            raise ValueError("timeout_delay_ms must be >= 0")


RANDOM_FAULT_KINDS = ("unavailable", "lost_response", "timeout")


class Faults:
    """Thread-safe fault switches; counters are consumed by the requests they hit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = FaultSettings()
        self._random = RandomFaults()
        self._rng = random.Random()  # noqa: S311 - fault dice, not cryptography
        self._injected: Counter[str] = Counter()

    def set_random(self, faults: RandomFaults) -> None:
        """Replace the random fault rates (and reseed); the injected counts start again."""
        with self._lock:
            self._random = faults
            self._rng = random.Random(faults.seed)  # noqa: S311 - fault dice
            self._injected = Counter()

    def injected(self) -> dict[str, int]:
        """How many requests each random fault kind hit since the last ``set_random``."""
        with self._lock:
            return {kind: self._injected[kind] for kind in RANDOM_FAULT_KINDS}

    def _roll(self, kind: str) -> bool:
        """True when this request draws the random fault ``kind`` (and counts it)."""
        with self._lock:
            rate = {
                "unavailable": self._random.unavailable_rate,
                "lost_response": self._random.lost_response_rate,
                "timeout": self._random.timeout_rate,
            }[kind]
            hit = rate > 0 and self._rng.random() < rate
            if hit:
                self._injected[kind] += 1
            return hit

    def _timeout_delay_s(self) -> float:
        with self._lock:
            return self._random.timeout_delay_ms / 1000

    def set(
        self,
        *,
        latency_ms: int | None = None,
        fail_next: int | None = None,
        lose_next_charge_responses: int | None = None,
        down: bool | None = None,
    ) -> FaultSettings:
        """Change the given switches, leave the others; returns the new settings."""
        changes: dict[str, Any] = {
            "latency_ms": latency_ms,
            "fail_next": fail_next,
            "lose_next_charge_responses": lose_next_charge_responses,
            "down": down,
        }
        with self._lock:
            self._settings = replace(
                self._settings, **{k: v for k, v in changes.items() if v is not None}
            )
            return self._settings

    def snapshot(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def reset(self) -> None:
        with self._lock:
            self._settings = FaultSettings()
            self._random = RandomFaults()
            self._injected = Counter()

    def _take_fail(self) -> bool:
        """True when this API request must fail with 503 (down, or a fail_next unit left)."""
        with self._lock:
            if self._settings.down:
                return True
            left = self._settings.fail_next
            if left > 0:
                self._settings = replace(self._settings, fail_next=left - 1)
            return left > 0

    def _take_lost_charge_response(self) -> bool:
        """True when this processed charge's response must be dropped."""
        with self._lock:
            left = self._settings.lose_next_charge_responses
            if left > 0:
                self._settings = replace(self._settings, lose_next_charge_responses=left - 1)
            return left > 0


def _parse_fault_settings(body: JsonObject) -> dict[str, Any]:
    """Validate an admin faults request: known keys, non-negative ints, a bool for down."""
    known = {f.name for f in fields(FaultSettings)}
    unknown = set(body) - known
    if unknown:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", f"unknown: {sorted(unknown)}")
    for name, value in body.items():
        ok = (
            isinstance(value, bool)
            if name == "down"
            else (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
        )
        if not ok:
            raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", f"bad value for {name}")
    return body


# --------------------------------------------------------------------------- HTTP


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body: JsonObject = {"error": {"code": code, "message": message}}


class _DropConnection(Exception):
    """Raised to close the connection without sending a response (lost-response fault)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must never keep the test process alive
    provider: PaymentProvider

    def __init__(self, address: tuple[str, int], provider: PaymentProvider) -> None:
        self.provider = provider
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    # Track live keep-alive connections so stop() really cuts every client off (an outage
    # test must not be served by a connection accepted before the stop).
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._open_lock:
            open_sockets, self._open = list(self._open), set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the adapter's urllib3 pool expects
    # Headers and body go out in separate writes; with Nagle on, each keep-alive response
    # waits ~40 ms for the client's delayed ACK, which would slow every saga test.
    disable_nagle_algorithm = True
    timeout = 30  # idle keep-alive connections are closed instead of holding a thread forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        provider = self.server.provider
        url = urlsplit(self.path)
        is_admin = url.path.startswith("/_admin/")
        try:
            raw = self._read_body()
            if is_admin:
                status, body = provider._admin(method, url.path, raw)
                self._send(status, body)
                return
            status, body, replayed = provider._api(
                method, url.path, parse_qs(url.query), self.headers, raw
            )
            self._send(status, body, replayed=replayed)
        except _ApiError as err:
            if not is_admin:
                provider._delay()  # a slow provider is slow to fail, too
            self._send(err.status, err.body)
        except _DropConnection:
            # Nothing written: the client's read fails with a closed connection (F09).
            self.close_connection = True

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            self.close_connection = True  # unread bytes would poison the keep-alive stream
            raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "bad or oversized body")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: JsonObject, *, replayed: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(data)


# --------------------------------------------------------------------------- provider


def _json_object(raw: bytes) -> JsonObject:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_json", "body is not JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_json", "body must be a JSON object")
    return body


def _require_str(body: JsonObject, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", f"{name} must be a string")
    return value


class PaymentProvider:
    """The fake provider: ``start()`` serves on 127.0.0.1 and returns the base URL."""

    def __init__(
        self, *, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.api_key = api_key
        self.ledger = Ledger()
        self.faults = Faults()
        # Stricter than most real providers (where the key is optional), so a client that
        # forgets it fails here. The F09 ablation turns it off (devstack/ablations.py).
        self.require_idempotency_key = True
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("PaymentProvider is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        if self._server is None:
            self._server = _Server(self._address, self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-payment-provider",
                daemon=True,
            )
            self._thread.start()
            logger.info("fake payment provider on %s", self.base_url)
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_all_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def reset(self) -> None:
        """Empty the ledger and clear every fault (between tests sharing one provider)."""
        self.ledger.reset()
        self.faults.reset()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- request processing (called from server threads) ----------------------------

    def _delay(self) -> None:
        latency_ms = self.faults.snapshot().latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)

    def _admin(self, method: str, path: str, raw: bytes) -> tuple[int, JsonObject]:
        if (method, path) == ("GET", "/_admin/ledger"):
            return HTTPStatus.OK, self.ledger.snapshot()
        if (method, path) == ("GET", "/_admin/faults"):
            return HTTPStatus.OK, asdict(self.faults.snapshot())
        if (method, path) == ("POST", "/_admin/faults"):
            settings = self.faults.set(**_parse_fault_settings(_json_object(raw)))
            return HTTPStatus.OK, asdict(settings)
        if (method, path) == ("POST", "/_admin/reset"):
            self.reset()
            return HTTPStatus.OK, {"reset": True}
        raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no admin route {method} {path}")

    def _api(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Message,
        raw: bytes,
    ) -> tuple[int, JsonObject, bool]:
        """Process one API request; returns (status, body, replayed)."""
        self.ledger._count_request()
        if self.faults._take_fail() or self.faults._roll("unavailable"):
            raise _ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "unavailable", "try again later")
        if headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized", "invalid API key")

        if (method, path) == ("GET", "/v1/charges"):
            references = query.get("reference")
            if not references:
                raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request", "reference required")
            data = [c.to_api() for c in self.ledger.charges_for(references[0])]
            self._delay()
            return HTTPStatus.OK, {"data": data}, False
        if path not in {"/v1/charges", "/v1/refunds"}:
            raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no route {method} {path}")
        if method != "POST":
            raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed", method)

        key = headers.get("Idempotency-Key", "")
        if not key and not self.require_idempotency_key:
            key = f"none-{secrets.token_hex(8)}"  # no key: every request is a new one
        if not key:
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "idempotency_key_required", "Idempotency-Key required"
            )
        body = _json_object(raw)
        fingerprint = hashlib.sha256(
            f"{method} {path} ".encode() + json.dumps(body, sort_keys=True).encode()
        ).hexdigest()
        is_charge = path == "/v1/charges"

        # One lock around check-process-store: two concurrent requests with one key resolve
        # to one side effect and one replay (the real provider's in-flight guard).
        with self.ledger.lock:
            stored = self.ledger._responses.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise _ApiError(
                        HTTPStatus.UNPROCESSABLE_ENTITY,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used with a different request",
                    )
                status, response, replayed = stored.status, stored.body, True
            else:
                status, response = self._charge(body, key) if is_charge else self._refund(body, key)
                self.ledger._responses[key] = StoredResponse(fingerprint, status, response)
                replayed = False

        self._after_processing(is_charge=is_charge)
        self._delay()
        return status, response, replayed

    def _after_processing(self, *, is_charge: bool) -> None:
        """The faults that hit a processed POST: its side effect stays, its response is lost."""
        if is_charge and self.faults._take_lost_charge_response():
            raise _DropConnection
        if self.faults._roll("lost_response"):
            raise _DropConnection
        if self.faults._roll("timeout"):
            # Processed, then too slow: by the time we would answer the client has given up.
            time.sleep(self.faults._timeout_delay_s())
            raise _DropConnection

    def _charge(self, body: JsonObject, key: str) -> tuple[int, JsonObject]:
        amount = body.get("amount_cents")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "invalid_request", "amount_cents must be a positive int"
            )
        currency = _require_str(body, "currency")
        payment_method = _require_str(body, "payment_method")
        reference = _require_str(body, "reference")
        if payment_method == DECLINED_PAYMENT_METHOD:
            self.ledger._declines.append(Decline(amount, currency, payment_method, reference, key))
            return HTTPStatus.PAYMENT_REQUIRED, {
                "error": {"code": "card_declined", "message": "Your card was declined."}
            }
        charge = Charge(
            charge_id=f"ch_{secrets.token_hex(12)}",
            amount_cents=amount,
            currency=currency,
            payment_method=payment_method,
            reference=reference,
            idempotency_key=key,
        )
        self.ledger._charges[charge.charge_id] = charge
        return HTTPStatus.CREATED, charge.to_api()

    def _refund(self, body: JsonObject, key: str) -> tuple[int, JsonObject]:
        charge_id = _require_str(body, "charge_id")
        if charge_id not in self.ledger._charges:
            raise _ApiError(HTTPStatus.NOT_FOUND, "charge_not_found", f"no charge {charge_id}")
        if self.ledger._refund_of(charge_id) is not None:
            raise _ApiError(
                HTTPStatus.CONFLICT, "charge_already_refunded", f"{charge_id} already refunded"
            )
        refund = Refund(f"re_{secrets.token_hex(12)}", charge_id, idempotency_key=key)
        self.ledger._refunds[refund.refund_id] = refund
        return HTTPStatus.CREATED, refund.to_api()
