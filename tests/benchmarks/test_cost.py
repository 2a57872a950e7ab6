"""The cost model (benchmarks/cost.py) prices what the template and the order profile say, and
the budgets in infra/config.py are the ones it derives.

Every test but the budget one runs on a small hand-written template (milliseconds, no
synthesis); the budget test reads the session's synthesized stacks (tests/synth.py), the same
ones the infra tests read.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import prices as P
from benchmarks.cost import (
    CURRENT_PROFILE,
    MILLION,
    Line,
    OrderProfile,
    ProfileError,
    cost_per_million,
    fixed_monthly,
    load_profile,
    monthly_budget,
    parse_profile,
    round_up,
    total,
)
from infra.config import stage_config
from infra.functions import HANDLERS
from tests.synth import Synthesized

STEPS = {
    "Api": 1024,
    "Intake": 256,
    "ReserveInventory": 512,
    "TakePayment": 512,
    "ConfirmOrder": 512,
    "RefundPayment": 512,
    "ReleaseInventory": 512,
    "MarkOrderFailed": 512,
}


def small_template() -> dict[str, Any]:
    """The resources the model reads, shaped as CDK synthesizes them."""
    resources: dict[str, Any] = {}
    for name, memory in STEPS.items():
        resources[f"{name}Logs"] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {"RetentionInDays": 30},
        }
        resources[f"{name}Function"] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Handler": HANDLERS[name],
                "MemorySize": memory,
                "Architectures": ["arm64"],
                "Environment": {"Variables": {"POWERTOOLS_LOG_LEVEL": "INFO"}},
                "LoggingConfig": {"LogGroup": {"Ref": f"{name}Logs"}},
                "TracingConfig": {"Mode": "Active"},
            },
        }
    definition = {
        "StartAt": "ReserveInventory",
        "TimeoutSeconds": 402,
        "States": {
            "ReserveInventory": {"Type": "Task", "Next": "TakePayment"},
            "TakePayment": {"Type": "Task", "Next": "ConfirmOrder"},
            "ConfirmOrder": {"Type": "Task", "Next": "OrderConfirmed"},
            "OrderConfirmed": {"Type": "Succeed"},
        },
    }
    resources |= {
        "SagaLogs": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 30}},
        "Saga": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineType": "STANDARD",
                "DefinitionString": {"Fn::Join": ["", [json.dumps(definition)]]},
                "LoggingConfiguration": {
                    "Level": "ERROR",
                    "Destinations": [
                        {
                            "CloudWatchLogsLogGroup": {
                                "LogGroupArn": {"Fn::GetAtt": ["SagaLogs", "Arn"]}
                            }
                        }
                    ],
                },
                "TracingConfiguration": {"Enabled": True},
            },
        },
        "Stage": {"Type": "AWS::ApiGateway::Stage", "Properties": {"TracingEnabled": True}},
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "Mapping": {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": {"EventSourceArn": {"Fn::GetAtt": ["Queue", "Arn"]}},
        },
        "Database": {
            "Type": "AWS::RDS::DBInstance",
            "Properties": {
                "DBInstanceClass": "db.t4g.small",
                "MultiAZ": False,
                "AllocatedStorage": "20",
                "StorageType": "gp2",
                "Engine": "postgres",
            },
        },
        "Nat": {"Type": "AWS::EC2::NatGateway", "Properties": {}},
    }
    return {"Resources": resources}


@pytest.fixture
def profile() -> OrderProfile:
    return parse_profile(CURRENT_PROFILE)


def by_name(lines: list[Line]) -> dict[str, Line]:
    return {line.name: line for line in lines}


def test_the_transitions_line_is_the_profiles_transitions_times_the_price(
    profile: OrderProfile,
) -> None:
    """Given 5 % of orders compensated, When 1M orders are priced on Standard, Then the
    transitions line is the weighted states entered x 1M x $0.025 per 1,000."""
    share = 0.05
    lines = by_name(cost_per_million(small_template(), profile, compensated_share=share))

    line = lines["Step Functions Standard: state transitions"]
    transitions = (
        (1 - share) * profile.happy.state_transitions
        + share * profile.compensated.state_transitions
    ) * MILLION
    assert line.quantity == pytest.approx(transitions)
    assert line.usd == pytest.approx(transitions * P.SFN_STANDARD_TRANSITION)
    assert line.usd == pytest.approx(102.50)  # 4.1 transitions an order, today's profile


def test_a_functions_memory_in_the_template_scales_its_duration_line(
    profile: OrderProfile,
) -> None:
    """Given a template copy where ReserveInventory has twice the memory, Then its duration
    line doubles and no other function's line moves."""
    template = small_template()
    doubled = copy.deepcopy(template)
    doubled["Resources"]["ReserveInventoryFunction"]["Properties"]["MemorySize"] = 1024

    before = by_name(cost_per_million(template, profile))
    after = by_name(cost_per_million(doubled, profile))

    name = "Lambda duration: ReserveInventory"
    assert before[name].usd > 0
    assert after[name].usd == pytest.approx(2 * before[name].usd)
    others = [n for n in before if n.startswith("Lambda duration:") and n != name]
    assert others
    assert all(after[n].usd == pytest.approx(before[n].usd) for n in others)


def test_express_and_standard_differ_exactly_on_the_workflow_lines(
    profile: OrderProfile,
) -> None:
    """When the same orders are priced on both workflow types, Then every shared line is the
    same, and the totals differ by the workflow lines alone."""
    standard = cost_per_million(small_template(), profile, "STANDARD")
    express = cost_per_million(small_template(), profile, "EXPRESS")

    shared = [(line.name, line.quantity, line.usd) for line in standard if not line.workflow]
    assert shared == [(line.name, line.quantity, line.usd) for line in express if not line.workflow]
    assert {line.name for line in standard if line.workflow} == {
        "Step Functions Standard: state transitions"
    }
    assert {line.name for line in express if line.workflow} == {
        "Step Functions Express: requests",
        "Step Functions Express: duration",
    }
    workflow_difference = total(line for line in standard if line.workflow) - total(
        line for line in express if line.workflow
    )
    assert total(standard) - total(express) == pytest.approx(workflow_difference)


def test_express_bills_each_execution_in_100_ms_steps_at_64_mb(profile: OrderProfile) -> None:
    """Given only happy orders (520 ms each), Then Express bills 600 ms x 64 MB per execution
    at the first duration tier, plus $1 per million requests."""
    lines = by_name(cost_per_million(small_template(), profile, "EXPRESS", compensated_share=0))

    duration = lines["Step Functions Express: duration"]
    assert duration.quantity == pytest.approx(MILLION * 0.6 * 64 / 1024)
    assert duration.usd == pytest.approx(duration.quantity * P.SFN_EXPRESS_GB_SECOND_TIERS[0][1])
    assert lines["Step Functions Express: requests"].usd == pytest.approx(1.00)


def test_a_missing_profile_key_is_an_error_that_names_it() -> None:
    """Given a profile whose happy path lacks state_transitions, Then loading it fails with
    the path and the key, instead of pricing zero transitions."""
    raw = copy.deepcopy(CURRENT_PROFILE)
    del raw["happy"]["state_transitions"]

    with pytest.raises(
        ProfileError, match=r"order_profile\.happy: missing keys \['state_transitions'\]"
    ):
        parse_profile(raw)


def test_a_file_without_the_order_profile_key_is_an_error(tmp_path: Path) -> None:
    """Given a performance.json that another script wrote without the order profile, Then the
    loader says which key is missing rather than falling back to the built-in numbers."""
    path = tmp_path / "performance.json"
    path.write_text(json.dumps({"throughput": {}}), encoding="utf-8")

    with pytest.raises(ProfileError, match="no 'order_profile' key"):
        load_profile(path)


def test_an_aws_call_without_a_price_is_an_error(profile: OrderProfile) -> None:
    """Given a profile that makes a call the model cannot price, Then pricing fails and names
    it, instead of pricing it at zero."""
    raw = copy.deepcopy(CURRENT_PROFILE)
    raw["happy"]["aws_calls"]["s3:PutObject"] = 1

    with pytest.raises(ProfileError, match=r"no price for \['s3:PutObject'\]"):
        cost_per_million(small_template(), parse_profile(raw))


def test_fixed_costs_come_from_the_template() -> None:
    """Given a template copy with Multi-AZ and a second NAT gateway, Then the instance line
    doubles and the NAT line grows by one gateway-month."""
    template = small_template()
    bigger = copy.deepcopy(template)
    bigger["Resources"]["Database"]["Properties"]["MultiAZ"] = True
    bigger["Resources"]["Nat2"] = {"Type": "AWS::EC2::NatGateway", "Properties": {}}

    before = by_name(fixed_monthly(template))
    after = by_name(fixed_monthly(bigger))

    assert before["RDS db.t4g.small single-AZ"].usd == pytest.approx(0.032 * 730)
    assert after["RDS db.t4g.small Multi-AZ"].usd == pytest.approx(2 * 0.032 * 730)
    assert after["NAT gateways"].usd - before["NAT gateways"].usd == pytest.approx(
        P.NAT_GATEWAY_HOUR * P.HOURS_PER_MONTH
    )


@pytest.mark.parametrize(
    ("usd", "budget"), [(9.2, 10), (173.0, 200), (1068.7, 1500), (2000.0, 2000)]
)
def test_budgets_round_up_to_a_round_number(usd: float, budget: int) -> None:
    assert round_up(usd) == budget


def test_the_configured_budget_is_the_one_the_cost_model_derives(
    stage_stack: Synthesized,
) -> None:
    """F05/F22: monthly_budget_usd in infra/config.py equals (fixed monthly cost of the
    synthesized template + expected orders x cost per order) x headroom, rounded up. A change
    to what deploys, to the order profile or to the prices that moves the budget fails here
    until config.py is updated (`python -m benchmarks.cost --stage <stage>` prints it)."""
    stage = stage_stack.config.name
    derived = monthly_budget(stage, template=stage_stack.raw, profile=load_profile())

    assert stage_config(stage).monthly_budget_usd == derived, (
        f"{stage}: infra/config.py says ${stage_config(stage).monthly_budget_usd}, "
        f"the cost model derives ${derived}"
    )
