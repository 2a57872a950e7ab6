"""Fixtures for the ops CLI: the suite's moto server and PostgreSQL, plus what the CLI needs
beyond the shared ``aws`` fixture (a Lambda function with an SQS mapping, executed sagas).

moto 5.2.5 lacks SQS StartMessageMoveTask and Step Functions RedriveExecution
(../shared/MOTO-NOTES.md): for exactly those two calls the tests swap in a botocore
``Stubber`` (``stub_call``), which also asserts the parameters the CLI sent.
"""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
import psycopg
import pytest
import urllib3
from botocore.stub import Stubber

from ops.aws import AwsClients
from ops.cli import main
from tests.fixtures import AwsResources

REGION = "eu-west-1"
MISSING_FUNCTION = f"arn:aws:lambda:{REGION}:123456789012:function:missing"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


# Where these tests look for a running local stack's map: nowhere (a developer's `make serve`
# must not answer them).
NO_LOCAL_MAP = Path(__file__).resolve().parent / "no-local-stack-map.json"


class Cli:
    """Runs ``main`` in-process with the resource flags of the test's moto resources."""

    def __init__(self, aws: AwsResources, *, local_map: Path = NO_LOCAL_MAP) -> None:
        self.aws = aws
        self.local_map = local_map
        # AWS_ENDPOINT_URL (tests/conftest.py) points these clients at the moto server.
        self.clients = AwsClients(region=REGION)
        self.flags: dict[str, str] = {
            "--orders-dlq-url": aws.intake_dlq_url,
            "--needs-attention-url": aws.needs_attention_queue_url,
            "--table": "test-idempotency",
        }

    def __call__(self, *argv: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        flags = [part for pair in self.flags.items() for part in pair]
        code = main(
            [*flags, *argv], clients=self.clients, out=out, err=err, local_map=self.local_map
        )
        return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(aws: AwsResources) -> Cli:
    return Cli(aws)


def stub_call(
    monkeypatch: pytest.MonkeyPatch,
    real_client: Any,
    service: Literal["sqs", "stepfunctions"],
    operation: str,
    response: dict[str, Any] | None = None,
    expected_params: dict[str, Any] | None = None,
) -> Stubber:
    """Answer one operation moto does not implement from a Stubber; the rest stays on moto.

    Without ``response`` nothing is queued, so any call of the operation fails the test:
    that is how refusals prove they made no call.
    """
    stubbed = boto3.client(service, region_name=REGION)
    stubber = Stubber(stubbed)
    if response is not None:
        stubber.add_response(operation, response, expected_params)
    stubber.activate()
    monkeypatch.setattr(real_client, operation, getattr(stubbed, operation))
    return stubber


# -- Lambda: the Intake function with its SQS mapping on the live alias ------------------------


@dataclass(frozen=True)
class IntakeMapping:
    function_name: str
    uuid: str
    queue_url: str


def create_lambda_function(name: str) -> str:
    """A do-nothing function in moto (with its own role), for tests that only need it to exist."""
    role = boto3.client("iam").create_role(
        RoleName=f"fn-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument="{}"
    )["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    boto3.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.13",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": package.getvalue()},
    )
    return name


@pytest.fixture
def intake_mapping(aws: AwsResources) -> IntakeMapping:
    """As infra/intake.py deploys it: the mapping is on ``<function>:live``.

    Created disabled: moto invokes the function (Docker) for each message sent to a queue
    with an enabled mapping, and the tests send messages.
    """
    lambda_ = boto3.client("lambda")
    name = create_lambda_function("orders-intake")
    version = lambda_.publish_version(FunctionName=name)["Version"]
    lambda_.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    queue_arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws.orders_queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    mapping = lambda_.create_event_source_mapping(
        EventSourceArn=queue_arn,
        FunctionName=f"{name}:live",
        Enabled=False,
        BatchSize=10,
        ScalingConfig={"MaximumConcurrency": 2},
    )
    return IntakeMapping(name, mapping["UUID"], aws.orders_queue_url)


# -- Step Functions: executions shaped like the saga --------------------------------------------

FORWARD = ("ReserveInventory", "TakePayment", "ConfirmOrder")
COMPENSATIONS = ("RefundPayment", "ReleaseInventory", "MarkOrderFailed")


def saga_definition(failing: frozenset[str], uncaught: frozenset[str] = frozenset()) -> str:
    """The saga's state names and edges (infra/saga.py); failing steps are Lambda tasks on a
    function that does not exist, so moto records a real LambdaFunctionFailed."""
    states: dict[str, Any] = {}

    def step(name: str, next_state: str, on_error: str | None) -> dict[str, Any]:
        if name not in failing:
            return {"Type": "Pass", "Next": next_state}
        state: dict[str, Any] = {"Type": "Task", "Resource": MISSING_FUNCTION, "Next": next_state}
        if on_error is not None and name not in uncaught:
            state["Catch"] = [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": on_error}
            ]
        return state

    states["ReserveInventory"] = step("ReserveInventory", "TakePayment", "ReleaseInventory")
    states["TakePayment"] = step("TakePayment", "ConfirmOrder", "RefundPayment")
    states["ConfirmOrder"] = step("ConfirmOrder", "OrderConfirmed", "RefundPayment")
    states["OrderConfirmed"] = {"Type": "Succeed"}
    chain = {"RefundPayment": "ReleaseInventory", "ReleaseInventory": "MarkOrderFailed"}
    for name in COMPENSATIONS:
        states[name] = step(name, chain.get(name, "OrderFailed"), f"Escalate{name}")
        states[f"Escalate{name}"] = {"Type": "Pass", "Next": "CompensationFailed"}
    states["OrderFailed"] = {"Type": "Fail", "Error": "OrderFailed", "Cause": "compensated"}
    states["CompensationFailed"] = {"Type": "Fail", "Error": "CompensationFailed"}
    return json.dumps({"StartAt": "ReserveInventory", "States": states})


class Sagas:
    """Runs one saga-shaped execution per order on the moto server and waits for its end."""

    def __init__(self) -> None:
        self.sfn = boto3.client("stepfunctions")

    def run(
        self,
        order_id: str,
        *,
        failing: frozenset[str] = frozenset(),
        uncaught: frozenset[str] = frozenset(),
    ) -> str:
        machine = self.sfn.create_state_machine(
            name=f"saga-{uuid.uuid4().hex[:8]}",
            definition=saga_definition(failing, uncaught),
            roleArn="arn:aws:iam::123456789012:role/saga",
        )["stateMachineArn"]
        arn = self.sfn.start_execution(
            stateMachineArn=machine, name=f"order-{order_id}", input=json.dumps({"order": {}})
        )["executionArn"]
        deadline = time.monotonic() + 30
        while self.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            assert time.monotonic() < deadline, f"{arn} still running"
            time.sleep(0.05)
        return machine


@pytest.fixture
def sagas(moto_server: str, aws: AwsResources) -> Iterator[Sagas]:
    """moto executes the ASL only with this switch; set back so other tests are unaffected."""

    def execute(enabled: bool) -> None:
        urllib3.request(
            "POST",
            f"{moto_server}/moto-api/config",
            body=json.dumps({"stepfunctions": {"execute_state_machine": enabled}}),
        )

    execute(True)
    try:
        yield Sagas()
    finally:
        execute(False)


# -- PostgreSQL rows ---------------------------------------------------------------------------


def insert_order(
    db: psycopg.Connection,
    order_id: str,
    *,
    status: str,
    payment: str | None = None,
    reserve: bool = False,
) -> None:
    """An order row (and optionally its reservation and payment) as the steps write them."""
    db.execute(
        "INSERT INTO orders (order_id, customer_id, status, items, payment_method, currency,"
        " amount_cents) VALUES (%s, 'customer-1', %s, %s, 'pm_card_visa', 'EUR', 240)",
        (order_id, status, json.dumps([{"sku": "SKU-APPLE", "quantity": 2}])),
    )
    db.execute(
        "INSERT INTO order_events (order_id, event, detail) VALUES (%s, 'RECEIVED', %s)",
        (order_id, json.dumps({"payment_method": "pm_card_visa"})),
    )
    if reserve:
        db.execute(
            "INSERT INTO reservations (order_id, sku, quantity, unit_price_cents)"
            " VALUES (%s, 'SKU-APPLE', 2, 120)",
            (order_id,),
        )
    if payment is not None:
        db.execute(
            "INSERT INTO payments (order_id, idempotency_key, charge_id, amount_cents, currency,"
            " status, refund_id) VALUES (%s, %s, %s, 240, 'EUR', %s, %s)",
            (
                order_id,
                f"{order_id}:charge",
                f"ch_{order_id[:8]}",
                payment,
                f"re_{order_id[:8]}" if payment == "REFUNDED" else None,
            ),
        )
