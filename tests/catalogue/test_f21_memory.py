"""F21 Memory exhaustion: the largest input the API accepts goes through every handler within
the function's memory budget, anything larger is refused before the domain logic, and a
warm environment does not accumulate memory from one invocation to the next.

Handler level, in-process (tests/fixtures.py: moto, PostgreSQL, the fake provider), with
``tracemalloc`` around each real handler call.

The budget, from the template: tracemalloc sees the Python heap an invocation allocates, not
the interpreter, the imported modules or the C libraries (libpq, OpenSSL) that make up the
environment's resident baseline, nor the allocator's slack (freed blocks RSS keeps, up to
about the traced peak again). ``HEAP_FRACTION`` of ``MemorySize`` is what one invocation's
traced peak may use; ``INIT_RSS_MB`` is the baseline we leave for the rest (measured: 82-87 MB
RSS right after importing the Api, Intake or TakePayment handler in a fresh CPython 3.13), and
``baseline + 2 x budget <= MemorySize`` is checked for every function. The in-process moto
server and fake provider serve the handler's calls from this process, so their allocations
are inside the traced peak too: the figure is an upper bound of the handler's own.

Migrate and PreTrafficHook take no customer input (a CloudFormation trigger, a CodeDeploy
event) and are not part of this path.
"""

from __future__ import annotations

import gc
import json
import os
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext
from orders_saga.handlers.api import MAX_BODY_BYTES
from orders_saga.models import MAX_LINES, MAX_QUANTITY, PaymentMethod, Sku

from devstack.gateway import MAX_PAYLOAD_BYTES
from devstack.lambda_runtime import FunctionConfig, FunctionWorker
from devstack.template import CfnTemplate
from infra.bundling import FUNCTIONS_DIR
from infra.functions import HANDLERS
from tests.catalogue.templates import our_functions
from tests.catalogue.test_f11_bad_input import longest_accepted, padded
from tests.fixtures import AwsResources
from tests.functions.test_handlers import CUSTOMER_A, rest_event, sqs_event
from tests.infra.conftest import Synthesized

MIB = 1024 * 1024
HEAP_FRACTION = 0.25
INIT_RSS_MB = 90
# Step Functions hands a task at most 256 KiB of state: the largest input a saga step can get.
SFN_MAX_STATE_BYTES = 256 * 1024
# Warm invocations 10..50 of one environment may keep at most this much more traced memory
# (caches that fill once, like regex and botocore's, settle in the first invocations).
ACCUMULATION_BOUND_BYTES = 64 * 1024
REPEATS = 50
WARM_UP = 10

MAX_SKU = longest_accepted(Sku, "A")
MAX_PAYMENT_METHOD = "pm_" + "a" * (longest_accepted(PaymentMethod, "a", prefix="pm_") - 3)


# --------------------------------------------------------------------------- budgets


@pytest.fixture(scope="module")
def budgets(synthesized: dict[str, Synthesized]) -> dict[str, int]:
    """Traced-peak budget in bytes per function: HEAP_FRACTION of its smallest MemorySize
    over the synthesized stages."""
    memory: dict[str, int] = {}
    for stack in synthesized.values():
        for name, (_, props) in our_functions(stack).items():
            memory[name] = min(memory.get(name, props["MemorySize"]), props["MemorySize"])
    for name, size in memory.items():
        assert INIT_RSS_MB + 2 * HEAP_FRACTION * size <= size, f"{name}: {size} MB is too small"
    return {name: int(size * MIB * HEAP_FRACTION) for name, size in memory.items()}


@contextmanager
def peak_traced() -> Iterator[Callable[[], int]]:
    """Peak traced allocation (bytes) above what was allocated when the block started."""
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    peak: list[int] = []
    try:
        yield lambda: peak[0]
    finally:
        _, highest = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak.append(highest - start)


# --------------------------------------------------------------------------- the largest input


@pytest.fixture
def largest_skus(db: psycopg.Connection) -> list[str]:
    """MAX_LINES stocked SKUs of the longest length the model accepts."""
    skus = [f"F21-{i:0{MAX_SKU - 4}d}" for i in range(MAX_LINES)]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO inventory (sku, name, unit_price_cents, available) VALUES (%s, %s, %s, %s)",
            [(sku, f"F21 {sku}", 100, 10 * MAX_LINES * MAX_QUANTITY) for sku in skus],
        )
    return skus


def largest_body(skus: list[str]) -> str:
    """The largest body the API accepts: MAX_LINES lines of the longest SKUs at the highest
    quantity, the longest payment method, padded to exactly MAX_BODY_BYTES."""
    body = {
        "items": [{"sku": sku, "quantity": MAX_QUANTITY} for sku in skus],
        "payment_method": MAX_PAYMENT_METHOD,
        "currency": "EUR",
    }
    return padded(body, MAX_BODY_BYTES).decode()


def post_event(body: str) -> dict[str, Any]:
    key = f"f21-{uuid.uuid4().hex}{'k' * 27}"  # the longest Idempotency-Key (64)
    return rest_event("POST", "/orders", body=body, headers={"Idempotency-Key": key})


@dataclass
class Measured:
    peaks: dict[str, int]

    def run(self, name: str, call: Callable[[], Any]) -> Any:
        with peak_traced() as peak:
            result = call()
        self.peaks[name] = max(self.peaks.get(name, 0), peak())
        return result


def compensation_state(order: dict[str, Any]) -> dict[str, Any]:
    """The clean copy a compensation receives, its error's Cause padded so the whole state
    is the largest Step Functions can pass (SFN_MAX_STATE_BYTES)."""
    state: dict[str, Any] = {"order": order, "error": {"Error": "States.TaskFailed", "Cause": ""}}
    room = SFN_MAX_STATE_BYTES - len(json.dumps(state).encode())
    state["error"]["Cause"] = "x" * room
    assert len(json.dumps(state).encode()) == SFN_MAX_STATE_BYTES
    return state


def test_f21_the_largest_accepted_order_goes_through_every_handler_within_budget(
    function_env: AwsResources,
    dev_template: CfnTemplate,
    lambda_context: LambdaContext,
    largest_skus: list[str],
    budgets: dict[str, int],
) -> None:
    """Given the largest body the API accepts (MAX_BODY_BYTES, MAX_LINES lines of the longest
    SKUs at MAX_QUANTITY), when it goes through Api, then Intake (a full batch of such
    messages, BatchSize from the template), then each forward saga step with the state built
    from the previous steps' real results, and each compensation with the largest state Step
    Functions can pass (256 KiB), then every handler succeeds and its traced peak stays under
    its budget (HEAP_FRACTION of its MemorySize in the template).

    Fails if: an input bound is lifted (MAX_BODY_BYTES, MAX_LINES) so the largest accepted
    input grows, a handler starts materialising something proportional to more than its
    input (e.g. reading every reservation or every order into memory instead of the order's),
    or a function's MemorySize is cut below what its largest input needs.
    """
    from orders_saga.handlers import (
        api,
        confirm_order,
        intake,
        mark_order_failed,
        refund_payment,
        release_inventory,
        reserve_inventory,
        take_payment,
    )

    (mapping,) = dev_template.event_source_mappings()
    measured = Measured({})
    body = largest_body(largest_skus)

    # One traced Api call; the rest of the Intake's batch is made the same way, untraced.
    responses = [measured.run("Api", lambda: api.handler(post_event(body), lambda_context))]
    responses += [
        api.handler(post_event(body), lambda_context) for _ in range(1, mapping.batch_size)
    ]
    messages = [m["Body"] for m in function_env.sqs_messages(function_env.orders_queue_url)]
    batch = measured.run("Intake", lambda: intake.handler(sqs_event(*messages), lambda_context))
    orders = [
        {k: v for k, v in json.loads(m).items() if k not in {"schema_version", "accepted_at"}}
        for m in messages
    ]
    confirmed: dict[str, Any] = {"order": orders[0]}
    for name, handler, key in (
        ("ReserveInventory", reserve_inventory.handler, "reservation"),
        ("TakePayment", take_payment.handler, "payment"),
        ("ConfirmOrder", confirm_order.handler, "confirmation"),
    ):
        confirmed[key] = measured.run(name, partial(handler, dict(confirmed), lambda_context))
    failed: dict[str, Any] = {"order": orders[1]}
    failed["reservation"] = reserve_inventory.handler(failed, lambda_context)
    failed["payment"] = take_payment.handler(failed, lambda_context)
    clean = compensation_state(orders[1])
    refund = measured.run("RefundPayment", lambda: refund_payment.handler(clean, lambda_context))
    released = measured.run(
        "ReleaseInventory", lambda: release_inventory.handler(clean, lambda_context)
    )
    marked = measured.run(
        "MarkOrderFailed", lambda: mark_order_failed.handler(clean, lambda_context)
    )

    assert [r["statusCode"] for r in responses] == [202] * mapping.batch_size
    assert len(messages) == mapping.batch_size
    assert batch == {"batchItemFailures": []}
    assert len(confirmed["reservation"]["lines"]) == MAX_LINES
    assert confirmed["confirmation"] == {"status": "CONFIRMED"}
    assert refund["refunded"] is True
    assert released == {"released_units": MAX_LINES * MAX_QUANTITY}
    assert marked["status"] == "FAILED"
    over = {name: (peak, budgets[name]) for name, peak in measured.peaks.items()}
    print(f"F21 traced peak / budget (bytes): {over}")  # shown with -rP, for the record
    assert set(over) == set(budgets) - {"Migrate", "PreTrafficHook"}
    assert {name: pb for name, pb in over.items() if pb[0] > pb[1]} == {}


# --------------------------------------------------------------------------- larger: refused


@pytest.mark.parametrize(
    "size", [MAX_BODY_BYTES + 1, MAX_PAYLOAD_BYTES], ids=["one byte over", "gateway maximum"]
)
def test_f21_a_larger_body_is_refused_before_the_domain_logic(
    function_env: AwsResources,
    db: psycopg.Connection,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    largest_skus: list[str],
    budgets: dict[str, int],
    size: int,
) -> None:
    """Given a well-formed order body one byte over MAX_BODY_BYTES, or as large as API
    Gateway forwards at all (10 MB; above that the gateway answers 413 itself,
    tests/devstack/test_gateway.py), when the Api handler gets it, then it answers 413 with a
    reason without parsing it or reaching the domain logic (no place_order.accept, no pydantic
    parse, no row, no message), within its memory budget.

    Fails if: the size check moves after the pydantic parse or into the domain logic, or is
    removed (the 10 MB body would be parsed into models and stored).
    """
    from orders_saga.handlers import api
    from orders_saga.logic import place_order
    from orders_saga.models import PlaceOrderRequest

    reached: list[str] = []
    monkeypatch.setattr(place_order, "accept", lambda *a, **k: reached.append("accept"))
    real_parse = PlaceOrderRequest.model_validate_json

    def parse(*args: Any, **kwargs: Any) -> Any:
        reached.append("parse")
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(PlaceOrderRequest, "model_validate_json", parse)
    body = largest_body(largest_skus).encode()
    event = post_event(padded(json.loads(body), size).decode())

    with peak_traced() as peak:
        response = api.handler(event, lambda_context)

    assert response["statusCode"] == 413
    assert json.loads(response["body"])["reason"]
    assert reached == []
    assert peak() <= budgets["Api"]
    row = db.execute("SELECT count(*) FROM orders").fetchone()
    assert row == (0,)
    assert function_env.sqs_messages(function_env.orders_queue_url) == []


# --------------------------------------------------------------------------- accumulation

# The environment for the accumulation proof: the real handler in a Lambda-like worker process
# (devstack.lambda_runtime, the local stack's execution environment), wrapped so it can report
# the traced memory it holds. A process of its own, because in this one the moto server and
# the fake provider keep every item, message and charge the invocations create.
PROBE = """
import gc, importlib, os, tracemalloc

tracemalloc.start()
_module, _, _attr = os.environ["F21_HANDLER"].rpartition(".")
_handler = getattr(importlib.import_module(_module), _attr)


def handler(event, context):
    if event == {"f21": "held"}:
        gc.collect()
        return {"held": tracemalloc.get_traced_memory()[0]}
    return _handler(event, context)
"""
FUNCTION_ENV_PREFIXES = ("AWS_", "DB_", "PAYMENT_", "POWERTOOLS_", "IDEMPOTENCY_")
FUNCTION_ENV_NAMES = ("ORDERS_QUEUE_URL", "INTAKE_DLQ_URL", "STATE_MACHINE_ARN")


@contextmanager
def environment(handler: str, tmp_path: Path, memory_mb: int) -> Iterator[FunctionWorker]:
    """One execution environment of ``handler`` with this test's function environment."""
    (tmp_path / "f21_probe.py").write_text(PROBE, encoding="utf-8")
    (tmp_path / "orders_saga").symlink_to(FUNCTIONS_DIR / "orders_saga")
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(FUNCTION_ENV_PREFIXES) or name in FUNCTION_ENV_NAMES
    }
    worker = FunctionWorker(
        FunctionConfig(
            function_name=f"f21-{handler.split('.')[-2]}",
            handler="f21_probe.handler",
            timeout_s=30,
            memory_mb=memory_mb,
            environment={**env, "F21_HANDLER": handler},
            region=env.get("AWS_REGION", "eu-west-1"),
            code_root=tmp_path,
        ),
        log_sink=lambda _record: None,
    )
    try:
        yield worker
    finally:
        worker.stop()


def api_events(body: str) -> Iterator[dict[str, Any]]:
    while True:  # a new Idempotency-Key, so a new order, every time
        yield post_event(body)


def intake_events(body: str) -> Iterator[dict[str, Any]]:
    fields = json.loads(body)
    while True:  # a new order per delivery: new idempotency record, row and execution
        message = {
            "schema_version": "2",
            "order_id": str(uuid.uuid4()),
            "customer_id": CUSTOMER_A,
            **fields,
            "accepted_at": "2026-01-01T00:00:00+00:00",
        }
        yield sqs_event(json.dumps(message))


@pytest.mark.parametrize(
    ("name", "events", "succeeded"),
    [
        ("Api", api_events, lambda r: r["statusCode"] == 202),
        ("Intake", intake_events, lambda r: r == {"batchItemFailures": []}),
    ],
    ids=["Api", "Intake"],
)
def test_f21_a_warm_environment_does_not_accumulate_memory(
    function_env: AwsResources,
    largest_skus: list[str],
    synthesized: dict[str, Synthesized],
    tmp_path: Path,
    name: str,
    events: Callable[[str], Iterator[dict[str, Any]]],
    succeeded: Callable[[Any], bool],
) -> None:
    """Given one warm execution environment of the function, when it serves REPEATS
    invocations of the largest input (a new order each time), then the traced memory it holds
    after invocation REPEATS is within ACCUMULATION_BOUND_BYTES of what it held after WARM_UP:
    nothing is kept per invocation.

    Fails if: a handler keeps something per invocation in module state (an lru_cache keyed on
    the order, a module-level list, Logger keys appended without `clear_state=True`, Metrics
    never flushed by `log_metrics`): 40 largest invocations leave far more than the bound.
    """
    (_, props) = our_functions(synthesized["dev"])[name]
    source = events(largest_body(largest_skus))
    held: dict[int, int] = {}

    with environment(HANDLERS[name], tmp_path, props["MemorySize"]) as worker:
        for n in range(1, REPEATS + 1):
            result = worker.invoke(next(source))
            assert not result.errored, result.payload
            assert succeeded(result.json()), result.payload
            if n in {WARM_UP, REPEATS}:
                held[n] = int(worker.invoke({"f21": "held"}).json()["held"])

    print(f"F21 {name} traced memory held after invocation n: {held}")
    assert worker.cold_starts == 1
    assert held[REPEATS] - held[WARM_UP] <= ACCUMULATION_BOUND_BYTES, held
