"""Each containment switched off, in the local run only (issue 11: prove it is load-bearing).

An ablation names one containment by catalogue ID and a short name
(``python -m devstack chaos --without F09-provider-idempotency-key``). It is applied by the
local stack, never by deployed code or its configuration, and announced like the other local
differences (``devstack/differences.py``, key ``ablation``):

* in the function workers: ``DEVSTACK_ABLATIONS`` lists the keys, and the worker calls
  ``install_in_worker`` before it imports the handler (as it hooks botocore for the call
  recorder), so a patched name is what the handler module binds at import;
* in the stack: the state machine definition (``update_state_machine``), the orders queue's
  redrive policy, the event source mapping's partial batch responses, the inventory CHECK
  constraint. ``LocalStack.apply_ablations`` switches these on a running stack and back.

Each ablation also names the faults it is about (``faults``: ``ChaosSettings`` fields) and the
invariant of the chaos report it protects. ``argued`` is set where no injectable fault makes
the invariant break: the ADR it points to says why the layer is redundant or kept.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

ABLATIONS_ENV: Final = "DEVSTACK_ABLATIONS"
ADR: Final = "docs/decisions/0009-load-bearing-containments.md"

# Handler modules, as devstack.aws names functions (``LocalResources.function``).
SAGA_STEPS: Final = (
    "reserve_inventory",
    "take_payment",
    "confirm_order",
    "refund_payment",
    "release_inventory",
    "mark_order_failed",
)
PAYMENT_STEPS: Final = ("take_payment", "refund_payment")


@dataclass(frozen=True)
class Ablation:
    key: str  # "<catalogue id>-<short name>"
    containment: str  # what is switched off, in a line
    protects: str  # the chaos report's invariant it must break ("" when argued)
    faults: Mapping[str, Any]  # ChaosSettings overrides: the faults this row is about
    functions: tuple[str, ...] = ()  # workers restarted with the patch (handler modules)
    stack: bool = False  # also switched in the stack (definition, queue, mapping, database)
    argued: str = ""  # why no injectable fault breaks it, when it is argued instead
    # At most this many orders per run: a row whose switched-off run is slow by nature (20
    # retries per step, invocations hung until the timeout) stays within make compare's time.
    max_orders: int | None = None

    @property
    def catalogue_id(self) -> str:
        return self.key.split("-", 1)[0]


_FAULTS_OFF: Final = MappingProxyType(
    {
        "duplicate_rate": 0.0,
        "poison_rate": 0.0,
        "payment_5xx_rate": 0.0,
        "payment_timeout_rate": 0.0,
        "lost_response_rate": 0.0,
        "crash_after_side_effect_rate": 0.0,
        "db_drop_rate": 0.0,
        "declined_rate": 0.0,
        "hot_skus": 0,
        "key_reuse_rate": 0.0,
        "start_throttle_rate": 0.0,
        "undeliverable_rate": 0.0,
    }
)


def _only(**faults: Any) -> Mapping[str, Any]:
    """Every fault off but these: a row's run shows what its own containment is worth."""
    return MappingProxyType({**_FAULTS_OFF, **faults})


ABLATIONS: Final[tuple[Ablation, ...]] = (
    Ablation(
        "F01-api-idempotency",
        "the API's Powertools idempotency on (customer, Idempotency-Key)",
        "reused key, different body, accepted",
        _only(duplicate_rate=0.3, key_reuse_rate=0.3),
        functions=("api",),
    ),
    Ablation(
        "F01-intake-idempotency",
        "the intake's Powertools idempotency on the order id",
        "",
        _only(duplicate_rate=0.5),
        functions=("intake",),
        argued="the execution name from the order id refuses the second StartExecution "
        "(its payload check is proven apart: ADR 0012)",
    ),
    Ablation(
        "F01-execution-name",
        "the Step Functions execution name derived from the order id (a fresh name instead)",
        "",
        _only(duplicate_rate=0.5),
        functions=("intake",),
        argued="the intake's idempotency record suppresses the duplicate before it starts one",
    ),
    Ablation(
        "F09-provider-idempotency-key",
        "the Idempotency-Key header on charges and refunds",
        "double-charged",
        _only(lost_response_rate=0.3, crash_after_side_effect_rate=0.1),
        functions=PAYMENT_STEPS,
    ),
    Ablation(
        "F10-stock-guards",
        "the conditional stock update (available >= quantity) and the CHECK (available >= 0)",
        "oversold skus",
        _only(hot_skus=2),
        functions=("reserve_inventory",),
        stack=True,
    ),
    Ablation(
        "F08-compensation",
        "the compensation chain: a failed order goes straight to FAILED (no refund, no release)",
        "failed, not compensated",
        _only(declined_rate=0.3, hot_skus=2),
        stack=True,
    ),
    Ablation(
        "F01-payload-validation",
        "payload validation on a reused idempotency key (API, intake)",
        "reused key, different body, accepted",
        _only(key_reuse_rate=0.3),
        functions=("api", "intake"),
    ),
    Ablation(
        "F02-partial-batch-response",
        "ReportBatchItemFailures on the intake's mapping: a failed record is deleted with its "
        "batch",
        "not terminal",
        _only(start_throttle_rate=0.7),
        stack=True,
    ),
    Ablation(
        "F19-circuit-breaker",
        "the circuit breaker around the payment provider",
        "",
        _only(payment_5xx_rate=1.0),
        functions=PAYMENT_STEPS,
        argued="its effect is load on a provider that is down, not a lost or doubled order: "
        "measured as provider requests per order",
    ),
    Ablation(
        "F03-retry-bounds",
        "jitter and bounds on the saga's retries (20 retries, fixed 1 s interval, no jitter)",
        "attempts above worst case",
        # A provider outage: every attempt fails, so every retry the budget allows happens.
        _only(payment_5xx_rate=1.0),
        stack=True,
        max_orders=12,
    ),
    Ablation(
        "F07-per-call-timeouts",
        "the payment provider's connect and read timeouts",
        "killed at the function timeout",
        # Held past the function timeout (10 s): a hung provider, not a slow one.
        _only(payment_timeout_rate=0.3, payment_timeout_delay_s=12.0),
        functions=PAYMENT_STEPS,
        max_orders=15,
    ),
    Ablation(
        "F02-orders-dlq",
        "the orders queue's redrive policy (maxReceiveCount -> DLQ)",
        "poison not dead-lettered",
        _only(undeliverable_rate=0.1),
        stack=True,
    ),
)
BY_KEY: Final = MappingProxyType({a.key: a for a in ABLATIONS})

# Two layers that each cover the other (each row above is argued): off together, they break.
PAIRS: Final[tuple[tuple[tuple[str, ...], str], ...]] = (
    (("F01-intake-idempotency", "F01-execution-name"), "more than one execution"),
)

# Every containment off at once, every fault any row uses: the reasonable-but-wrong app.
EVERYTHING: Final = tuple(a.key for a in ABLATIONS)


def union_of_faults(keys: Iterable[str]) -> dict[str, Any]:
    """The faults of several rows together: for each fault the highest rate any row uses."""
    out: dict[str, Any] = dict(_FAULTS_OFF)
    for key in keys:
        for name, value in BY_KEY[key].faults.items():
            out[name] = value if out.get(name) is None else max(out[name], value)
    return out


def everything_faults() -> dict[str, Any]:
    """Every kind of fault the rows use, each at a rate the hardened app must absorb without
    breaking an invariant (the rows' own rates include outages that fail every order)."""
    return {
        **_FAULTS_OFF,
        "duplicate_rate": 0.1,
        "poison_rate": 0.05,
        "payment_5xx_rate": 0.05,
        "lost_response_rate": 0.15,
        "payment_timeout_rate": 0.05,
        "payment_timeout_delay_s": 12.0,
        "crash_after_side_effect_rate": 0.1,
        "declined_rate": 0.15,
        "hot_skus": 2,
        "key_reuse_rate": 0.1,
        "start_throttle_rate": 0.3,
        "undeliverable_rate": 0.05,
    }


def parse(keys: Iterable[str]) -> frozenset[str]:
    """Validated keys; ``all`` means every ablation (the reasonable-but-wrong profile)."""
    out: set[str] = set()
    for key in keys:
        if key == "all":
            out.update(EVERYTHING)
        elif key in BY_KEY:
            out.add(key)
        else:
            known = ", ".join(["all", *BY_KEY])
            raise ValueError(f"unknown ablation {key!r}; known: {known}")
    return frozenset(out)


def worker_keys(keys: Iterable[str], handler_module: str) -> frozenset[str]:
    """The ablations a function's workers apply (the ones naming its handler module)."""
    return frozenset(k for k in keys if handler_module in BY_KEY[k].functions)


# --------------------------------------------------------------------------- the state machine

NAIVE_RETRY: Final = MappingProxyType({"IntervalSeconds": 1, "MaxAttempts": 20, "BackoffRate": 1})
COMPENSATIONS: Final = ("RefundPayment", "ReleaseInventory")
MARK_FAILED: Final = "MarkOrderFailed"


def ablate_definition(definition: str, keys: Iterable[str]) -> str:
    """The state machine definition with the ASL-level ablations in ``keys`` applied."""
    keys = frozenset(keys)
    asl = json.loads(definition)
    for state in asl.get("States", {}).values():
        if "F03-retry-bounds" in keys:
            for retrier in state.get("Retry", []):
                for bound in ("MaxDelaySeconds", "JitterStrategy"):
                    retrier.pop(bound, None)
                retrier.update(NAIVE_RETRY)
        if "F08-compensation" in keys:
            for catcher in state.get("Catch", []):
                if catcher.get("Next") in COMPENSATIONS:
                    catcher["Next"] = MARK_FAILED
    return json.dumps(asl)


# --------------------------------------------------------------------------- the worker side


def install_from_environment() -> frozenset[str]:
    """Apply ``DEVSTACK_ABLATIONS`` in a function worker, before the handler is imported."""
    keys = parse(k for k in os.environ.get(ABLATIONS_ENV, "").split(",") if k)
    # In the table's order: the idempotency patches rebind what the API and intake modules
    # import, so they come before any patch that imports those modules.
    for key, patch in _WORKER_PATCHES.items():
        if key in keys:
            patch()
    return keys


def _without_idempotency(prefixes: frozenset[str]) -> Callable[[], None]:
    def patch() -> None:
        from orders_saga import idempotency

        original = idempotency.idempotent

        def idempotent(*, key_prefix: str, **kwargs: Any) -> Callable[[Any], Any]:
            if key_prefix in prefixes:
                return lambda fn: fn
            return original(key_prefix=key_prefix, **kwargs)

        idempotency.idempotent = idempotent

    return patch


def _without_payload_validation() -> None:
    from orders_saga import idempotency

    original = idempotency.idempotency_config

    def idempotency_config(*, key: str, payload: str) -> Any:
        config = original(key=key, payload=payload)
        config.payload_validation_jmespath = ""
        return config

    idempotency.idempotency_config = idempotency_config


def _fresh_execution_names() -> None:
    from orders_saga.adapters import messaging
    from orders_saga.logic.order_identity import execution_name_for

    # The order id stays in the name (reports count executions per order); the suffix makes
    # every start a new execution, as a name from the message id or a random one would.
    def fresh_name(order_id: str) -> str:
        return f"{execution_name_for(order_id)}-{uuid.uuid4().hex[:8]}"

    setattr(messaging, "execution_name_for", fresh_name)  # noqa: B010 - a re-exported name


def _no_provider_idempotency_key() -> None:
    from orders_saga.adapters.payments import HttpPaymentGateway

    original = HttpPaymentGateway._headers

    def _headers(self: Any, key: str | None, *, refresh_key: bool = False) -> dict[str, str]:
        return original(self, None, refresh_key=refresh_key)

    HttpPaymentGateway._headers = _headers  # type: ignore[method-assign]


def _unconditional_stock_update() -> None:
    from orders_saga.adapters import orders_repository

    orders_repository.TAKE_STOCK = (
        "UPDATE inventory SET available = available - %(quantity)s"
        " WHERE sku = %(sku)s RETURNING unit_price_cents"
    )


def _no_circuit_breaker() -> None:
    from orders_saga.adapters.payments import HttpPaymentGateway

    def _call(self: Any, method: str, path: str, body: Any, key: str | None) -> Any:
        return self._send(method, path, body, key)

    HttpPaymentGateway._call = _call  # type: ignore[method-assign]


def _no_payment_timeouts() -> None:
    import urllib3
    from orders_saga.adapters.payments import HttpPaymentGateway

    original = HttpPaymentGateway.__init__

    def __init__(self: Any, settings: Any, http: Any = None) -> None:
        untimed = urllib3.PoolManager(timeout=urllib3.Timeout(None), retries=False, maxsize=2)
        original(self, settings, http or untimed)

    HttpPaymentGateway.__init__ = __init__  # type: ignore[method-assign]


_WORKER_PATCHES: Final[Mapping[str, Callable[[], None]]] = MappingProxyType(
    {
        "F01-payload-validation": _without_payload_validation,
        "F01-api-idempotency": _without_idempotency(frozenset({"place_order"})),
        "F01-intake-idempotency": _without_idempotency(frozenset({"start_saga"})),
        "F01-execution-name": _fresh_execution_names,
        "F09-provider-idempotency-key": _no_provider_idempotency_key,
        "F10-stock-guards": _unconditional_stock_update,
        "F19-circuit-breaker": _no_circuit_breaker,
        "F07-per-call-timeouts": _no_payment_timeouts,
    }
)


__all__ = [
    "ABLATIONS",
    "ABLATIONS_ENV",
    "BY_KEY",
    "EVERYTHING",
    "PAIRS",
    "Ablation",
    "ablate_definition",
    "install_from_environment",
    "parse",
    "union_of_faults",
    "worker_keys",
]
