"""Execution environments: isolation, warm reuse, errors, timeouts and crashes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.lambda_runtime import FunctionConfig, FunctionPool, FunctionWorker, LogRecord
from tests.devstack.mini_stack import HANDLERS

ALIAS_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:probe:live"


def _config(**overrides: Any) -> FunctionConfig:
    values: dict[str, Any] = {
        "function_name": "probe",
        "handler": "runtime_probe.handler",
        "timeout_s": 1.0,
        "memory_mb": 256,
        "environment": {"GREETING": "hello"},
        "region": "eu-west-1",
        "version": "1",
        "invoked_function_arn": ALIAS_ARN,
        "code_root": HANDLERS,
    }
    values.update(overrides)
    return FunctionConfig(**values)


@pytest.fixture
def logs() -> list[LogRecord]:
    return []


@pytest.fixture
def worker(logs: list[LogRecord]) -> Iterator[FunctionWorker]:
    w = FunctionWorker(_config(), log_sink=logs.append)
    yield w
    w.stop()


def test_environment_and_context_are_lambdas(
    worker: FunctionWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "a-developers-profile")
    out = worker.invoke({"action": "echo"}).json()
    assert out["env"] == {
        "GREETING": "hello",
        "AWS_LAMBDA_FUNCTION_NAME": "probe",
        "AWS_PROFILE": None,  # the developer's shell does not leak in
        "AWS_REGION": "eu-west-1",
    }
    assert out["cwd"] == str(HANDLERS)
    ctx = out["context"]
    assert ctx["invoked_function_arn"] == ALIAS_ARN
    assert (ctx["function_version"], ctx["memory_limit_in_mb"]) == ("1", 256)
    assert 900 < ctx["remaining_ms"] <= 1000
    assert ctx["log_group_name"] == "/aws/lambda/probe"


def test_module_state_survives_between_invocations_of_a_warm_environment(
    worker: FunctionWorker,
) -> None:
    first = worker.invoke({}).json()
    second = worker.invoke({}).json()
    assert second["init_id"] == first["init_id"]
    assert (first["invocations"], second["invocations"]) == (1, 2)
    assert worker.cold_starts == 1


def test_an_exception_becomes_the_lambda_error_payload_and_a_log_line(
    worker: FunctionWorker, logs: list[LogRecord]
) -> None:
    result = worker.invoke({"action": "raise", "message": "SKU-1"})
    assert result.errored
    assert result.error_type == "OutOfStock"
    assert result.json()["errorMessage"] == "SKU-1"
    assert result.json()["stackTrace"]
    assert worker.cold_starts == 1  # a handled error keeps the environment
    time.sleep(0.1)
    assert any(r.stream == "stderr" and '"errorType": "OutOfStock"' in r.line for r in logs)


def test_handler_logs_reach_the_sink_line_by_line(
    worker: FunctionWorker, logs: list[LogRecord]
) -> None:
    worker.invoke({"action": "stderr"})
    time.sleep(0.1)
    lines = [(r.stream, r.line) for r in logs if r.function_name == "probe"]
    assert ("stdout", '{"level": "INFO", "message": "handling", "action": "stderr"}') in lines
    assert ("stderr", "to stderr") in lines


def test_timeout_kills_the_environment_and_the_next_call_is_a_cold_start(
    worker: FunctionWorker,
) -> None:
    before = worker.invoke({}).json()
    started = time.monotonic()
    result = worker.invoke({"action": "sleep", "seconds": 5})
    assert time.monotonic() - started < 2.0
    assert result.error_type == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in result.json()["errorMessage"]
    after = worker.invoke({}).json()
    assert after["pid"] != before["pid"]
    assert after["init_id"] != before["init_id"]
    assert after["invocations"] == 1
    assert (worker.cold_starts, worker.timeouts) == (2, 1)


def test_a_crash_is_reported_and_the_environment_restarts(worker: FunctionWorker) -> None:
    result = worker.invoke({"action": "crash"})
    assert result.error_type == "Runtime.ExitError"
    assert "exit status 3" in result.json()["errorMessage"]
    assert worker.invoke({}).json()["invocations"] == 1
    assert worker.cold_starts == 2


def test_unserializable_result_is_a_marshal_error(worker: FunctionWorker) -> None:
    assert worker.invoke({"action": "unserializable"}).error_type == "Runtime.MarshalError"


def test_a_handler_that_cannot_be_imported_fails_every_invoke_with_import_error() -> None:
    w = FunctionWorker(_config(handler="no_such_module.handler"), log_sink=lambda r: None)
    try:
        result = w.invoke({})
        assert result.error_type == "Runtime.ImportModuleError"
        assert w.invoke({}).error_type == "Runtime.ImportModuleError"
    finally:
        w.stop()


def test_warm_up_pays_the_cold_start_before_the_first_invocation(
    worker: FunctionWorker,
) -> None:
    worker.warm_up()
    assert worker.pid is not None
    assert worker.invoke({}).json()["pid"] == worker.pid
    assert worker.cold_starts == 1


def test_a_pool_runs_invocations_in_parallel_environments() -> None:
    pool = FunctionPool(_config(timeout_s=5.0), size=2, log_sink=lambda r: None)
    pool.warm_up(2)
    results: list[dict[str, Any]] = []

    def call() -> None:
        results.append(pool.invoke({"action": "sleep", "seconds": 0.6}).json())

    try:
        threads = [threading.Thread(target=call) for _ in range(2)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - started < 1.1
        assert len({r["pid"] for r in results}) == 2
        assert len(pool.workers) == 2
    finally:
        pool.stop()


def test_switching_a_configuration_back_reuses_its_parked_environments() -> None:
    """Given a warm pool, when it switches to another configuration (an ablation) and back,
    then the other configuration starts environments of its own with its environment, and the
    way back serves from the environments parked warm before (same pids, no cold start), as
    Lambda keeps an idle environment; at most one other configuration stays parked, and stop()
    stops parked environments too. Fails if switching back cold-starts, if an environment of one
    configuration serves the other, or if parked workers outlive the pool."""
    hardened, ablated, third = (
        _config(environment={"GREETING": g}) for g in ("hello", "ablated", "third")
    )
    pool = FunctionPool(hardened, size=1, log_sink=lambda r: None)
    try:
        before = pool.invoke({}).json()
        pool.switch_config(ablated)
        during = pool.invoke({}).json()
        assert pool.parked == 1
        pool.switch_config(hardened)
        after = pool.invoke({}).json()
        pool.switch_config(third)  # parks hardened; ablated, the oldest parked, is stopped
        last = pool.invoke({}).json()
        parked_at_the_end = pool.parked
    finally:
        pool.stop()

    assert (before["env"]["GREETING"], during["env"]["GREETING"]) == ("hello", "ablated")
    assert during["pid"] != before["pid"]
    assert (after["pid"], after["invocations"], after["env"]["GREETING"]) == (
        before["pid"],
        2,
        "hello",
    )
    assert last["env"]["GREETING"] == "third"
    assert parked_at_the_end == 1
    for pid in {before["pid"], during["pid"], last["pid"]}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
