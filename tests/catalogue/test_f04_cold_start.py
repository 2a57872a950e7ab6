"""F04 Cold-start amplification: init is cheap (no network at import), clients are built once
per execution environment and reused by every later invocation."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from benchmarks import lambda_image
from infra.config import FUNCTION_NAMES
from infra.functions import HANDLERS
from tests.catalogue.templates import our_functions
from tests.fixtures import AwsResources
from tests.functions.test_handlers import CUSTOMER_A, rest_event, sqs_event
from tests.infra.conftest import Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs in a clean interpreter (-I: no PYTHON* variables, no user site, no cwd on sys.path).
# Every way out of the process is blocked and recorded before the handler module is imported;
# botocore client creation is recorded too, for the report (not asserted: a client object
# built at init costs no network and is the catalogue's "built once at init").
IMPORT_PROBE = """
import importlib, json, socket, sys
sys.path.insert(0, sys.argv[1])
calls = []
def blocked(name):
    def refuse(*args, **kwargs):
        calls.append(f"{name}{args[1:]!r}")
        raise OSError(f"F04: {name} during import")
    return refuse
socket.socket.connect = blocked("connect")
socket.socket.connect_ex = blocked("connect_ex")
socket.socket.sendto = blocked("sendto")
socket.getaddrinfo = blocked("getaddrinfo")
socket.create_connection = blocked("create_connection")
import botocore.session
clients = []
real_create_client = botocore.session.Session.create_client
def counting(self, service_name, *args, **kwargs):
    clients.append(service_name)
    return real_create_client(self, service_name, *args, **kwargs)
botocore.session.Session.create_client = counting
error = None
try:
    importlib.import_module(sys.argv[2])
except BaseException as exc:
    error = repr(exc)
print(json.dumps({
    "network": calls, "clients": clients, "error": error, "modules": sorted(sys.modules)
}))
"""


@pytest.fixture(scope="module")
def import_probes(synthesized: dict[str, Synthesized]) -> dict[str, dict[str, Any]]:
    """Import every handler at once, each in its own clean interpreter with its own env."""
    functions = our_functions(synthesized["dev"])
    running = {
        name: subprocess.Popen(  # fixed argv, no shell
            [
                sys.executable,
                "-I",
                "-c",
                IMPORT_PROBE,
                str(REPO_ROOT / "functions"),
                HANDLERS[name].rsplit(".", 1)[0],
            ],
            env=lambda_image.lambda_environment(
                name, functions[name][1], task_root=str(REPO_ROOT / "functions")
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in FUNCTION_NAMES
    }
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (name, err[-2000:])
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_f04_importing_the_handler_makes_no_network_call(
    import_probes: dict[str, dict[str, Any]], name: str
) -> None:
    """Given a clean interpreter with only the Lambda environment of the function and every
    socket path blocked, when its handler module is imported, then it imports and touches no
    network. (Building a client object at init is allowed, F04 "clients built once at init";
    the probe records them, see `probe["clients"]`, but only the network is refused.)

    Fails if: a handler or a module it imports builds a client, reads a secret, opens the
    database or resolves a host at import (e.g. `SQS = boto3.client("sqs")` at module level,
    or a Powertools persistence layer built with an eager client).
    """
    probe = import_probes[name]

    assert probe["error"] is None, probe["error"]
    assert probe["network"] == []


DATABASE_STEPS = ("ReserveInventory", "ConfirmOrder", "ReleaseInventory", "MarkOrderFailed")
# What a function's init must not load because its requests never use it (issue 12: measured
# in docs/performance.md). A module is named with its package: "boto3" covers "boto3.session".
NOT_AT_INIT = {
    **{
        step: (
            # no AWS client: the RDS IAM token is a local signature (adapters/rds_iam.py).
            # (botocore.client cannot be checked here: the probe imports botocore.session to
            # count clients; docs/performance.md shows the module counts of a clean import.)
            "boto3",
            "aws_lambda_powertools.utilities.idempotency",  # no records (ADR 0012)
            "aws_lambda_powertools.utilities.parameters",  # no secret read (IAM login)
            "orders_saga.logic.pre_traffic_check",  # the hook's side of the health check
        )
        for step in DATABASE_STEPS
    },
    "PreTrafficHook": ("psycopg", "aws_lambda_powertools.utilities.idempotency"),
}


@pytest.mark.parametrize("name", sorted(NOT_AT_INIT))
def test_f04_a_function_loads_at_init_nothing_its_requests_do_not_use(
    import_probes: dict[str, dict[str, Any]], name: str
) -> None:
    """Given a function's handler imported as Lambda's init imports it, then none of the
    packages its requests never use is loaded: a database step builds no AWS client (its IAM
    token is a local signature), keeps no idempotency record and reads no secret; the
    pre-traffic hook loads no database driver.

    Fails if: a shared module starts importing one of them at module level (e.g. the health
    check importing the hook's CodeDeploy adapter, Tracer auto-patching every library, the
    database adapter importing the secrets reader), which is how the init of every step grew
    to twice the yardstick before issue 12.
    """
    loaded = set(import_probes[name]["modules"])

    unwanted = [
        module
        for module in NOT_AT_INIT[name]
        if module in loaded or any(m.startswith(f"{module}.") for m in loaded)
    ]

    assert import_probes[name]["error"] is None, import_probes[name]["error"]
    assert unwanted == []


def intake_message(schema_version: str = "2") -> str:
    message: dict[str, Any] = {
        "schema_version": schema_version,
        "order_id": str(uuid.uuid4()),
        "customer_id": CUSTOMER_A,
        "items": [{"sku": "SKU-APPLE", "quantity": 1}],
        "payment_method": "pm_card_visa",
        "accepted_at": datetime.now(UTC).isoformat(),
    }
    if schema_version == "2":
        message["currency"] = "EUR"
    return json.dumps(message)


@pytest.fixture
def client_creations(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts every botocore client made in this process, whoever makes it."""
    created: Counter[str] = Counter()
    real = botocore.session.Session.create_client

    def counting(self: botocore.session.Session, service_name: str, *a: Any, **kw: Any) -> Any:
        created[service_name] += 1
        return real(self, service_name, *a, **kw)

    monkeypatch.setattr(botocore.session.Session, "create_client", counting)
    return created


def invoke_intake(context: LambdaContext) -> dict[str, Any]:
    from orders_saga.handlers import intake

    result: dict[str, Any] = intake.handler(sqs_event(intake_message()), context)
    return result


def invoke_api(context: LambdaContext) -> dict[str, Any]:
    from orders_saga.handlers import api

    body = {
        "items": [{"sku": "SKU-APPLE", "quantity": 1}],
        "payment_method": "pm_card_visa",
        "currency": "EUR",
    }
    key = f"key-{uuid.uuid4().hex[:12]}"
    result: dict[str, Any] = api.handler(
        rest_event("POST", "/orders", body=body, headers={"Idempotency-Key": key}), context
    )
    return result


@pytest.mark.parametrize(
    ("invoke", "succeeded"),
    [
        (invoke_intake, lambda r: r == {"batchItemFailures": []}),
        (invoke_api, lambda r: r["statusCode"] == 202),
    ],
    ids=["Intake", "Api"],
)
def test_f04_clients_are_built_once_per_environment(
    function_env: AwsResources,
    lambda_context: LambdaContext,
    client_creations: Counter[str],
    invoke: Callable[[LambdaContext], dict[str, Any]],
    succeeded: Callable[[dict[str, Any]], bool],
) -> None:
    """Given a fresh execution environment (caches reset by function_env), when the handler
    is invoked for two different orders, then the first invocation builds its clients and the
    second builds none.

    Fails if: `@cache` is removed from aws_clients._client (or botocore_config), or a handler
    path builds a client per invocation (e.g. `boto3.client(...)` inside a function).
    """
    first = invoke(lambda_context)
    after_first = Counter(client_creations)
    second = invoke(lambda_context)

    assert succeeded(first)
    assert succeeded(second)
    assert sum(after_first.values()) > 0, "the first invocation must have built its clients"
    assert client_creations == after_first
