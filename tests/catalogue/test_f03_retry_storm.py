"""F03 Retry storm: one bounded, jittered retry owner per hop; the worst case is a checked number.

Layers per order: SQS -> Intake (maxReceiveCount), Step Functions -> each saga step (Retry),
botocore inside each step (AWS_MAX_ATTEMPTS), urllib3 to the payment provider (off).
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from infra.config import (
    SAGA_STEPS,
    SFN_MAX_RETRY_ATTEMPTS,
    saga_step_invocations_worst_case,
)
from tests.catalogue.templates import Saga, our_functions, resources
from tests.infra.conftest import Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]
# The catalogue's bound: above this a saga step is hammering, not retrying (README F03 row).
CATALOGUE_MAX_ATTEMPTS = 4


def all_retriers(saga: Saga) -> list[tuple[str, dict[str, Any]]]:
    return [(name, retrier) for name, state in saga.states() for retrier in state.get("Retry", [])]


def attempts_per_task(state: dict[str, Any] | Any) -> int:
    """Worst case for one Task: each retrier counts its own attempts, so they add up."""
    return 1 + sum(int(retrier["MaxAttempts"]) for retrier in state.get("Retry", []))


def documented_step_invocations_bound() -> int:
    text = (REPO_ROOT / "runbooks" / "F03-retry-storm.md").read_text(encoding="utf-8")
    match = re.search(r"the bound is\s+(\d+)", text)
    assert match is not None, "runbooks/F03-retry-storm.md must state the worst-case figure"
    return int(match.group(1))


def documented_sdk_attempts() -> int:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"botocore bounded \(`standard`, (\d+) attempts\)", text)
    assert match is not None, "README's F03 row must state botocore's attempts"
    return int(match.group(1))


def test_f03_every_saga_retrier_is_full_jitter_capped_and_bounded(
    stage_stack: Synthesized,
) -> None:
    """Given the synthesized saga, when every Retry of every state is read, then each one backs
    off exponentially with full jitter under a cap, and retries at most 4 times.

    Fails if: `jitter_strategy=FULL` or `max_delay` is dropped from
    OrderSaga._add_jittered_retry, RetryBudget.max_attempts goes above 4 (with the config
    guard relaxed), or `retry_on_service_exceptions=False` is removed (CDK then adds its own
    Lambda.* retrier without jitter or cap).
    """
    retriers = all_retriers(Saga(stage_stack))

    assert retriers, "the walker found no Retry at all"
    for state, retrier in retriers:
        where = (state, retrier.get("ErrorEquals"))
        assert retrier.get("JitterStrategy") == "FULL", where
        assert isinstance(retrier.get("MaxDelaySeconds"), int), where
        assert retrier["MaxDelaySeconds"] >= retrier.get("IntervalSeconds", 1), where
        assert 1 <= retrier.get("MaxAttempts", 3) <= CATALOGUE_MAX_ATTEMPTS, where
        assert retrier.get("BackoffRate", 0) >= 1.0, where
    assert SFN_MAX_RETRY_ATTEMPTS <= CATALOGUE_MAX_ATTEMPTS


def test_f03_worst_case_attempts_per_order_match_the_documented_figure(
    stage_stack: Synthesized,
) -> None:
    """Given the template (ASL retriers, function env, queue redrive) and infra/config.py,
    when the worst case per order is computed from each, then both agree with the runbook.

    Lambda step invocations = Lambda tasks x (1 + MaxAttempts); AWS API attempts per call
    site = that x AWS_MAX_ATTEMPTS; Intake invocations <= maxReceiveCount.

    Fails if: a Lambda task or a retrier is added, MaxAttempts, AWS_MAX_ATTEMPTS or
    maxReceiveCount change in the template without infra/config.py, the runbook and README
    being updated with it (or the other way round).
    """
    config = stage_stack.config
    saga = Saga(stage_stack)
    tasks = saga.lambda_tasks()
    env_attempts = {
        name: int(props["Environment"]["Variables"]["AWS_MAX_ATTEMPTS"])
        for name, (_, props) in our_functions(stage_stack).items()
    }
    (mapping,) = [p for _, p in resources(stage_stack).of_type("AWS::Lambda::EventSourceMapping")]
    (queue,) = resources(stage_stack).referenced(mapping["EventSourceArn"], "AWS::SQS::Queue")
    receives = resources(stage_stack).props(queue)["RedrivePolicy"]["maxReceiveCount"]

    step_invocations = sum(attempts_per_task(state) for _, state, _ in tasks)
    (sdk_attempts,) = set(env_attempts.values())
    sdk_calls_per_call_site = sdk_attempts * step_invocations

    assert len(tasks) == len(SAGA_STEPS)
    assert step_invocations == saga_step_invocations_worst_case(config)
    assert step_invocations == documented_step_invocations_bound()
    assert sdk_attempts == config.aws_sdk.max_attempts == documented_sdk_attempts()
    assert sdk_calls_per_call_site == (
        config.aws_sdk.max_attempts * len(SAGA_STEPS) * config.retry.total_attempts
    )
    assert receives == config.queue.max_receive_count


@pytest.fixture
def closing_server() -> Iterator[tuple[str, list[int]]]:
    """An HTTP endpoint that accepts and drops every connection; counts the connections."""
    accepted: list[int] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def test_f03_payment_adapter_makes_one_http_attempt_per_call(
    closing_server: tuple[str, list[int]],
) -> None:
    """Given the payment adapter's own pool manager and a provider that drops connections,
    when one request is sent, then exactly one connection is made: urllib3 does not retry.

    Fails if: `retries=False` is removed from HttpPaymentGateway's PoolManager (urllib3's
    default Retry(3) would reconnect up to 4 times under Step Functions' own retries).
    """
    from orders_saga.adapters.payments import HttpPaymentGateway
    from orders_saga.config import PaymentSettings

    url, accepted = closing_server
    gateway = HttpPaymentGateway(
        PaymentSettings(
            base_url=url,
            api_key_secret_arn="unused",
            connect_timeout_s=1.0,
            read_timeout_s=1.0,
            breaker_fail_max=5,
            breaker_reset_s=30.0,
        )
    )
    pool = gateway._http

    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", f"{url}/v1/charges?reference=order-1")

    retries = urllib3.util.Retry.from_int(pool.connection_pool_kw["retries"])
    assert retries.total is False
    assert len(accepted) == 1


@pytest.fixture
def fresh_client_caches() -> Iterator[None]:
    from tests.fixtures import reset_function_caches

    reset_function_caches()
    yield
    reset_function_caches()


@pytest.mark.usefixtures("fresh_client_caches")
def test_f03_botocore_retries_are_standard_and_bounded_by_the_function_env(
    stage_stack: Synthesized, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given each function's synthesized environment, when its botocore Config and a client
    are built, then retries are mode `standard` with total_max_attempts from AWS_MAX_ATTEMPTS.

    Fails if: botocore_config() drops `retries` (botocore's legacy mode, 5 attempts) or
    ignores AWS_MAX_ATTEMPTS, or the template stops setting AWS_MAX_ATTEMPTS.
    """
    from orders_saga import aws_clients

    from tests.fixtures import reset_function_caches

    for name, (_, props) in our_functions(stage_stack).items():
        attempts = props["Environment"]["Variables"]["AWS_MAX_ATTEMPTS"]
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", attempts)
        reset_function_caches()

        # botocore's Config sets its options as attributes at runtime (untyped in the stubs).
        config: Any = aws_clients.botocore_config()
        client_config: Any = aws_clients.sqs().meta.config

        expected = {"mode": "standard", "total_max_attempts": int(attempts)}
        assert config.retries == expected, name
        assert client_config.retries == expected, name
    # The value really comes from the environment, not a constant that happens to match.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    reset_function_caches()
    changed: Any = aws_clients.botocore_config()
    assert changed.retries == {"mode": "standard", "total_max_attempts": 2}
