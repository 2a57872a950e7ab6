"""The whole local stack (the same one ``make demo`` runs), built from ``cdk.out``.

One stack per session, shared by ``tests/e2e`` and the catalogue proofs that need the real
handlers, queue poller, state machine and database together (registered in tests/conftest.py).
Tests reset the provider faults through ``running`` and use fresh order keys, so they do not
see each other's orders."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import urllib3

from devstack.lambda_runtime import LogRecord
from devstack.stack import LocalStack
from infra.service import this_service

CDK_OUT = Path(__file__).resolve().parents[1] / "cdk.out"
TERMINAL = {"CONFIRMED", "FAILED"}


@dataclass
class LogCapture:
    """Every line every function printed, for assertions on what was logged."""

    records: list[LogRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, record: LogRecord) -> None:
        with self.lock:
            self.records.append(record)

    def json_lines(self) -> list[dict[str, Any]]:
        with self.lock:
            lines = list(self.records)
        parsed: list[dict[str, Any]] = []
        for record in lines:
            try:
                value = json.loads(record.line)
            except ValueError:
                continue
            if isinstance(value, dict):
                value["_function"] = record.function_name
                parsed.append(value)
        return parsed


@dataclass
class Api:
    base_url: str
    http: urllib3.PoolManager = field(
        default_factory=lambda: urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=2, read=30)
        )
    )

    def post_order(
        self, token: str | None, body: Any, key: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = token
        if key is not None:
            headers["Idempotency-Key"] = key
        raw = body if isinstance(body, str) else json.dumps(body)
        response = self.http.request(
            "POST", f"{self.base_url}/orders", body=raw.encode(), headers=headers
        )
        return response.status, json.loads(response.data or b"{}")

    def get_order(self, token: str, order_id: str) -> tuple[int, dict[str, Any]]:
        response = self.http.request(
            "GET", f"{self.base_url}/orders/{order_id}", headers={"Authorization": token}
        )
        return response.status, json.loads(response.data or b"{}")

    def wait_terminal(self, token: str, order_id: str, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, body = self.get_order(token, order_id)
            if status == 200 and body["status"] in TERMINAL:
                return body
            time.sleep(0.2)
        raise AssertionError(f"order {order_id} not terminal after {timeout_s} s: {body}")


@dataclass
class Running:
    stack: LocalStack
    api: Api
    logs: LogCapture
    alice: str
    bob: str
    # What the stack said at start (its announced differences from AWS among them).
    announcements: list[str] = field(default_factory=list)

    @staticmethod
    def customer_id(token: str) -> str:
        return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def new_key() -> str:
    return f"e2e-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def aws_call_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every local stack of the session records its functions' AWS calls (one
    subdirectory per stack run; read by tests/catalogue/test_f20_least_privilege.py)."""
    return tmp_path_factory.mktemp("aws-calls")


@pytest.fixture(scope="session")
def local_stack(aws_call_log_dir: Path) -> Iterator[Running]:
    if not this_service().template_path("dev").exists():
        pytest.fail("the dev template is missing: run `make synth` first")
    logs = LogCapture()
    announcements: list[str] = []
    with LocalStack(
        cdk_out=CDK_OUT, log_sink=logs, say=announcements.append, call_log_dir=aws_call_log_dir
    ) as stack:
        yield Running(
            stack=stack,
            api=Api(stack.api_url),
            logs=logs,
            alice=stack.customer_token("alice@example.com"),
            bob=stack.customer_token("bob@example.com"),
            announcements=announcements,
        )


@pytest.fixture
def running(local_stack: Running) -> Iterator[Running]:
    local_stack.stack.provider.faults.reset()
    yield local_stack
    local_stack.stack.provider.faults.reset()
