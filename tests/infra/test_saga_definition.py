"""The saga's rendered ASL keeps the contract of docs/architecture.md (F03, F07, F08, F09).

The definition is read back from the synthesized template, so these tests check what deploys.
The moto tests then run that same definition (Lambda alias ARNs as Task resources) with
in-process step handlers, to show the graph really executes as the static checks say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from unittest import mock

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import assertions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from moto import mock_aws
from moto.awslambda import models as lambda_models
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

from infra import config as stage_settings
from infra.config import SAGA_STEPS, StageConfig, saga_execution_timeout_s, stage_config
from infra.guardrails import check_template, state_machine_definition
from infra.saga import (
    BUSINESS_ERRORS,
    COMPENSATION_STEPS,
    FORWARD_RESULT_PATHS,
    FORWARD_STEPS,
    OrderSaga,
)

ACCOUNT, REGION = "123456789012", "eu-west-1"
CONFIG: StageConfig = stage_config("dev")
Json = Any


@dataclass
class SagaStack:
    template: dict[str, Json]
    alias_ids: dict[str, str]  # step name -> logical id of its alias
    queue_id: str
    machine_id: str

    @property
    def definition(self) -> Mapping[str, Json]:
        props = self.template["Resources"][self.machine_id]["Properties"]
        definition = state_machine_definition(props)
        assert definition is not None
        return definition

    @property
    def states(self) -> Mapping[str, Mapping[str, Json]]:
        states: Mapping[str, Mapping[str, Json]] = self.definition["States"]
        return states


def build_saga_stack(config: StageConfig = CONFIG) -> SagaStack:
    app = cdk.App()
    stack = cdk.Stack(app, "SagaOnly", env=cdk.Environment(account=ACCOUNT, region=REGION))
    aliases: dict[str, lambda_.IAlias] = {}
    for name in SAGA_STEPS:
        fn = lambda_.Function(
            stack,
            name,
            runtime=lambda_.Runtime.PYTHON_3_13,
            handler="index.handler",
            code=lambda_.Code.from_inline("def handler(e, c): pass"),
        )
        aliases[name] = lambda_.Alias(
            stack, f"{name}Live", alias_name="live", version=fn.current_version
        )
    queue = sqs.Queue(stack, "NeedsAttention")
    saga = OrderSaga(stack, "Saga", config=config, steps=aliases, needs_attention_queue=queue)

    def logical_id(construct: Any) -> str:
        return str(stack.resolve(construct.node.default_child.logical_id))

    return SagaStack(
        template=dict(assertions.Template.from_stack(stack).to_json()),
        alias_ids={name: logical_id(alias) for name, alias in aliases.items()},
        queue_id=logical_id(queue),
        machine_id=logical_id(saga.state_machine),
    )


@pytest.fixture(scope="module")
def saga() -> SagaStack:
    return build_saga_stack()


def tasks_of(saga: SagaStack) -> Iterator[tuple[str, Mapping[str, Json]]]:
    for name, state in saga.states.items():
        if state["Type"] == "Task":
            yield name, state


def path_until_fail(saga: SagaStack, start: str) -> list[str]:
    """State names from ``start`` following Next until a Fail state (included)."""
    path, name = [start], start
    while saga.states[name]["Type"] != "Fail":
        name = saga.states[name]["Next"]
        path.append(name)
    return path


# -- static shape ------------------------------------------------------------------------------


def test_step_names_match_the_stage_config() -> None:
    assert FORWARD_STEPS + COMPENSATION_STEPS == stage_settings.SAGA_STEPS


def test_forward_steps_run_in_business_order(saga: SagaStack) -> None:
    assert saga.definition["StartAt"] == "ReserveInventory"
    assert [saga.states[step]["Next"] for step in FORWARD_STEPS] == [
        "TakePayment",
        "ConfirmOrder",
        "OrderConfirmed",
    ]
    assert saga.states["OrderConfirmed"]["Type"] == "Succeed"


def test_forward_results_land_where_the_contract_says(saga: SagaStack) -> None:
    assert {step: saga.states[step]["ResultPath"] for step in FORWARD_STEPS} == {
        "ReserveInventory": "$.reservation",
        "TakePayment": "$.payment",
        "ConfirmOrder": "$.confirmation",
    }
    # the whole state goes in: no Parameters / InputPath on forward steps
    assert all(
        "Parameters" not in saga.states[s] and "InputPath" not in saga.states[s]
        for s in FORWARD_STEPS
    )


def test_every_task_has_a_timeout(saga: SagaStack) -> None:
    timeouts = {name: state.get("TimeoutSeconds") for name, state in tasks_of(saga)}
    assert len(timeouts) == len(SAGA_STEPS) + len(COMPENSATION_STEPS)  # + escalations
    assert set(timeouts.values()) == {CONFIG.task_timeout_s}


def test_every_retry_is_bounded_jittered_and_capped(saga: SagaStack) -> None:
    retriers = [r for _, state in tasks_of(saga) for r in state.get("Retry", [])]
    assert len(retriers) == len(list(tasks_of(saga)))  # one per task, none missing
    for retrier in retriers:
        assert retrier["JitterStrategy"] == "FULL"
        assert retrier["MaxDelaySeconds"] == CONFIG.retry.max_delay_s
        assert 1 <= retrier["MaxAttempts"] <= 4
        assert retrier["MaxAttempts"] == CONFIG.retry.max_attempts
        assert retrier["BackoffRate"] == CONFIG.retry.backoff_rate


def test_business_errors_are_caught_and_never_retried(saga: SagaStack) -> None:
    retried = {e for _, s in tasks_of(saga) for r in s.get("Retry", []) for e in r["ErrorEquals"]}
    assert not retried & set(BUSINESS_ERRORS)
    forward_retries = {e for s in FORWARD_STEPS for e in saga.states[s]["Retry"][0]["ErrorEquals"]}
    assert "States.ALL" not in forward_retries  # forward steps retry transient errors only
    caught = {
        step: [e for c in saga.states[step]["Catch"] for e in c["ErrorEquals"]]
        for step in FORWARD_STEPS
    }
    assert caught["ReserveInventory"][0] == "OutOfStock"
    assert caught["TakePayment"][0] == "PaymentDeclined"
    assert all(errors[-1] == "States.ALL" for errors in caught.values())


@pytest.mark.parametrize(
    ("failed_step", "compensations"),
    [
        ("ReserveInventory", ["ReleaseInventory", "MarkOrderFailed"]),
        # F09: a payment failure refunds first, the charge may exist with its response lost
        ("TakePayment", ["RefundPayment", "ReleaseInventory", "MarkOrderFailed"]),
        ("ConfirmOrder", ["RefundPayment", "ReleaseInventory", "MarkOrderFailed"]),
    ],
)
def test_compensations_run_in_reverse_order_then_fail(
    saga: SagaStack, failed_step: str, compensations: list[str]
) -> None:
    for catcher in saga.states[failed_step]["Catch"]:
        assert catcher["ResultPath"] == "$.error"
        assert path_until_fail(saga, catcher["Next"]) == [*compensations, "OrderFailed"]
    assert saga.states["OrderFailed"]["Error"] == "OrderFailed"


@pytest.mark.parametrize("compensation", COMPENSATION_STEPS)
def test_compensation_gets_a_clean_copy_and_escalates_when_it_still_fails(
    saga: SagaStack, compensation: str
) -> None:
    state = saga.states[compensation]
    assert state["Parameters"] == {"order.$": "$.order", "error.$": "$.error"}
    assert state["Retry"][0]["ErrorEquals"] == ["States.ALL"]

    [catcher] = state["Catch"]
    assert catcher["ErrorEquals"] == ["States.ALL"]
    escalate = saga.states[catcher["Next"]]
    assert escalate["Type"] == "Task"
    assert escalate["Resource"].endswith(":states:::sqs:sendMessage")
    body = escalate["Parameters"]["MessageBody"]
    assert body["failed_compensation"] == compensation
    assert body["order.$"] == "$.order"
    assert body["error.$"] == "$.error"
    assert saga.states[escalate["Next"]] == {
        "Type": "Fail",
        "Error": "CompensationFailed",
        "Cause": saga.states[escalate["Next"]]["Cause"],
    }


def test_no_map_states(saga: SagaStack) -> None:
    assert all(state["Type"] != "Map" for state in saga.states.values())


def test_execution_timeout_is_the_computed_worst_case(saga: SagaStack) -> None:
    assert saga.definition["TimeoutSeconds"] == saga_execution_timeout_s(CONFIG)


def test_state_machine_is_standard_traced_and_logged_with_retention(saga: SagaStack) -> None:
    props = saga.template["Resources"][saga.machine_id]["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"  # dev logs DEBUG; prod only ERROR without data
    assert logging["IncludeExecutionData"] is True
    [group_id] = [
        lid
        for lid, res in saga.template["Resources"].items()
        if res["Type"] == "AWS::Logs::LogGroup"
    ]
    assert saga.template["Resources"][group_id]["Properties"]["RetentionInDays"] == 14


def test_prod_logs_errors_without_execution_data() -> None:
    prod = build_saga_stack(stage_config("prod"))
    logging = prod.template["Resources"][prod.machine_id]["Properties"]["LoggingConfiguration"]
    assert logging["Level"] == "ERROR"
    assert logging["IncludeExecutionData"] is False


def test_state_machine_passes_the_guardrail(saga: SagaStack) -> None:
    violations = [v for v in check_template(saga.template) if v.logical_id == saga.machine_id]
    assert violations == []


# -- the same definition executed by moto --------------------------------------------------


StepBehaviour = Callable[[dict[str, Json]], dict[str, Json]]


class StepError(Exception):
    def __init__(self, error_type: str) -> None:
        super().__init__(error_type)
        self.error_type = error_type


@dataclass
class FakeSteps:
    """In-process step handlers; records every call with its payload."""

    behaviours: dict[str, StepBehaviour] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Json]]] = field(default_factory=list)

    def invoke(self, function: Any, event: Any, *_: Any, **__: Any) -> tuple[str, bool, str]:
        payload = json.loads(event) if isinstance(event, str | bytes) else event
        name = function.function_name
        self.calls.append((name, payload))
        try:
            behaviour = self.behaviours.get(name)
            result = behaviour(payload) if behaviour else {"ok": name}
        except StepError as error:
            failure = {"errorType": error.error_type, "errorMessage": name, "stackTrace": []}
            return json.dumps(failure), True, ""
        return json.dumps(result), False, ""

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def failing(error_type: str, times: int | None = None) -> StepBehaviour:
    """Raise ``error_type`` on the first ``times`` calls (always when None), then succeed."""
    counter = {"n": 0}

    def behaviour(_: dict[str, Json]) -> dict[str, Json]:
        counter["n"] += 1
        if times is None or counter["n"] <= times:
            raise StepError(error_type)
        return {"ok": True}

    return behaviour


@dataclass
class MotoSaga:
    steps: FakeSteps
    waits: list[float]
    queue_url: str
    run: Callable[[dict[str, Json]], dict[str, Json]]


def _render(template_value: Json, refs: Mapping[str, str]) -> str:
    """Fn::Join of the definition with every Ref replaced by the moto resource it names."""
    separator, parts = template_value["Fn::Join"]
    rendered = [p if isinstance(p, str) else refs[p["Ref"]] for p in parts]
    return str(separator).join(rendered)


@pytest.fixture
def moto_saga(saga: SagaStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoSaga]:
    # In-process moto: the suite's moto-server endpoint must not capture these clients.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    steps, waits = FakeSteps(), list[float]()
    sleepless = SimpleNamespace(sleep=waits.append)  # Retry waits recorded, not slept
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        # autospec passes moto's LambdaFunction instance through as the first argument
        mock.patch.object(
            lambda_models.LambdaFunction, "_invoke_lambda", autospec=True, side_effect=steps.invoke
        ),
        mock.patch.object(retrier_decl, "time", sleepless),
    ):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="saga", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda", region_name=REGION)
        refs = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}
        for name in SAGA_STEPS:
            lam.create_function(
                FunctionName=name,
                Runtime="python3.13",
                Role=role,
                Handler="index.handler",
                Code={"ZipFile": b"unused: invocations are handled in-process"},
            )
            version = lam.publish_version(FunctionName=name)["Version"]
            alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
            refs[saga.alias_ids[name]] = alias["AliasArn"]
        queue_url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="na")["QueueUrl"]
        refs[saga.queue_id] = queue_url
        definition_string = saga.template["Resources"][saga.machine_id]["Properties"][
            "DefinitionString"
        ]
        sfn = boto3.client("stepfunctions", region_name=REGION)
        machine = sfn.create_state_machine(
            name="saga-under-test", definition=_render(definition_string, refs), roleArn=role
        )["stateMachineArn"]

        def run(order: dict[str, Json]) -> dict[str, Json]:
            execution = sfn.start_execution(
                stateMachineArn=machine,
                name=f"order-{order['order_id']}",
                input=json.dumps({"order": order}),
            )["executionArn"]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                described = sfn.describe_execution(executionArn=execution)
                if described["status"] != "RUNNING":
                    return dict(described)
                time.sleep(0.02)
            raise AssertionError("execution did not finish")

        yield MotoSaga(steps=steps, waits=waits, queue_url=queue_url, run=run)


ORDER = {"order_id": "o-1", "customer_id": "c-1", "items": [{"sku": "SKU-APPLE", "quantity": 1}]}


def test_moto_happy_path_runs_forward_steps_and_stores_results(moto_saga: MotoSaga) -> None:
    result = moto_saga.run(ORDER)

    assert result["status"] == "SUCCEEDED"
    assert moto_saga.steps.names == list(FORWARD_STEPS)
    output = json.loads(result["output"])
    for step, path in FORWARD_RESULT_PATHS.items():
        assert output[path.removeprefix("$.")] == {"ok": step}
    # each forward step saw the whole state so far
    assert moto_saga.steps.calls[2][1] == {
        "order": ORDER,
        "reservation": {"ok": "ReserveInventory"},
        "payment": {"ok": "TakePayment"},
    }


def test_moto_declined_payment_is_not_retried_and_is_compensated(moto_saga: MotoSaga) -> None:
    moto_saga.steps.behaviours["TakePayment"] = failing("PaymentDeclined")

    result = moto_saga.run(ORDER)

    assert result["status"] == "FAILED"
    assert result["error"] == "OrderFailed"
    assert moto_saga.steps.names == [
        "ReserveInventory",
        "TakePayment",  # once: a business error is never retried
        "RefundPayment",
        "ReleaseInventory",
        "MarkOrderFailed",
    ]
    refund_payload = dict(moto_saga.steps.calls)["RefundPayment"]
    assert set(refund_payload) == {"order", "error"}  # the clean copy
    assert refund_payload["order"] == ORDER
    assert refund_payload["error"]["Error"] == "PaymentDeclined"
    assert moto_saga.waits == []


def test_moto_out_of_stock_releases_and_marks_failed(moto_saga: MotoSaga) -> None:
    moto_saga.steps.behaviours["ReserveInventory"] = failing("OutOfStock")

    result = moto_saga.run(ORDER)

    assert result["error"] == "OrderFailed"
    assert moto_saga.steps.names == ["ReserveInventory", "ReleaseInventory", "MarkOrderFailed"]


def test_moto_transient_error_is_retried_with_capped_jittered_waits(moto_saga: MotoSaga) -> None:
    moto_saga.steps.behaviours["TakePayment"] = failing("TransientError", times=2)

    result = moto_saga.run(ORDER)

    assert result["status"] == "SUCCEEDED"
    assert moto_saga.steps.names.count("TakePayment") == 3
    bounds = CONFIG.retry.max_delays_s()
    assert len(moto_saga.waits) == 2
    assert all(0 <= wait <= bound for wait, bound in zip(moto_saga.waits, bounds, strict=False))


def test_moto_exhausted_retries_compensate_from_refund(moto_saga: MotoSaga) -> None:
    moto_saga.steps.behaviours["ConfirmOrder"] = failing("TransientError")

    result = moto_saga.run(ORDER)

    assert result["error"] == "OrderFailed"
    assert moto_saga.steps.names.count("ConfirmOrder") == CONFIG.retry.total_attempts
    assert moto_saga.steps.names[-3:] == ["RefundPayment", "ReleaseInventory", "MarkOrderFailed"]


def test_moto_failing_compensation_lands_in_needs_attention(moto_saga: MotoSaga) -> None:
    moto_saga.steps.behaviours["TakePayment"] = failing("PaymentDeclined")
    moto_saga.steps.behaviours["RefundPayment"] = failing("TransientError")

    result = moto_saga.run(ORDER)

    assert result["status"] == "FAILED"
    assert result["error"] == "CompensationFailed"
    assert moto_saga.steps.names.count("RefundPayment") == CONFIG.retry.total_attempts
    assert "ReleaseInventory" not in moto_saga.steps.names  # stops for a human (runbook F08)
    sqs_client = boto3.client("sqs", region_name=REGION)
    [message] = sqs_client.receive_message(QueueUrl=moto_saga.queue_url)["Messages"]
    body = json.loads(message["Body"])
    assert body["failed_compensation"] == "RefundPayment"
    assert body["order"] == ORDER
    assert body["error"]["Error"] == "PaymentDeclined"
    assert body["compensation_error"]["Error"] == "TransientError"
    assert body["execution_id"].endswith(":order-o-1")
