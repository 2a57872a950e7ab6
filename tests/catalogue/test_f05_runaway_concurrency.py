"""F05 Runaway concurrency and fan-out: every function, mapping, Map state and API stage is
bounded, with the numbers of infra/config.py."""

from __future__ import annotations

from typing import Any

from infra.guardrails import iter_states
from tests.catalogue.templates import Saga, acknowledged, our_functions, resources
from tests.infra.conftest import Synthesized


def test_f05_every_function_has_reserved_concurrency(stage_stack: Synthesized) -> None:
    """Given every AWS::Lambda::Function of the stack, then each has ReservedConcurrentExecutions
    (ours: the configured value), or is a CDK-owned provider acknowledged for F05 with a reason.

    Fails if: `reserved_concurrent_executions` is dropped in infra/functions.py, or a new
    function is added without it and without an F05 acknowledgement.
    """
    ours = {logical_id: name for name, (logical_id, _) in our_functions(stage_stack).items()}
    for logical_id, props in resources(stage_stack).of_type("AWS::Lambda::Function"):
        reserved = props.get("ReservedConcurrentExecutions")
        if logical_id in ours:
            expected = stage_stack.config.function(ours[logical_id]).reserved_concurrency
            assert reserved == expected, logical_id
        else:
            assert reserved is not None or acknowledged(stage_stack, logical_id, "F05"), logical_id
        assert reserved is None or reserved >= 1, logical_id


def test_f05_sqs_mapping_concurrency_stays_within_the_consumer_reservation(
    stage_stack: Synthesized,
) -> None:
    """Given every SQS event source mapping, then ScalingConfig.MaximumConcurrency is set, is the
    configured value and does not exceed the reserved concurrency of the function it invokes.

    Fails if: `max_concurrency` is dropped from the SqsEventSource, or set above Intake's
    reservation (the mapping would then be throttled and burn receives into the DLQ).
    """
    res = resources(stage_stack)
    mappings = list(res.of_type("AWS::Lambda::EventSourceMapping"))
    assert mappings
    for logical_id, props in mappings:
        fn = res.function_of(props["FunctionName"])
        assert fn is not None, logical_id
        maximum = props["ScalingConfig"]["MaximumConcurrency"]
        assert maximum == stage_stack.config.queue.max_concurrency, logical_id
        assert maximum <= res.props(fn)["ReservedConcurrentExecutions"], logical_id


def test_f05_the_walker_finds_nested_map_states() -> None:
    """Given a hand-made definition with a Map inside a Parallel branch, when walked, then the
    Map is found (so "no Map state" below is a finding, not a blind walker)."""
    definition: dict[str, Any] = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "End": True,
                "Branches": [
                    {
                        "StartAt": "M",
                        "States": {
                            "M": {
                                "Type": "Map",
                                "End": True,
                                "ItemProcessor": {
                                    "StartAt": "X",
                                    "States": {"X": {"Type": "Pass", "End": True}},
                                },
                            }
                        },
                    }
                ],
            }
        },
    }

    kinds = sorted(state["Type"] for _, state in iter_states(definition))

    assert kinds == ["Map", "Parallel", "Pass"]


def test_f05_every_map_state_has_max_concurrency(stage_stack: Synthesized) -> None:
    """Given the saga definition, then every Map state (there are none today) has a non-zero
    MaxConcurrency.

    Fails if: a Map state is added without `max_concurrency` (0/absent = unlimited fan-out).
    """
    states = list(Saga(stage_stack).states())
    maps = [(name, state) for name, state in states if state["Type"] == "Map"]

    assert states, "the walker found no state at all"
    for name, state in maps:
        assert state.get("MaxConcurrency", 0) > 0 or "MaxConcurrencyPath" in state, name


def test_f05_api_stage_throttles_every_method_with_the_configured_limits(
    stage_stack: Synthesized,
) -> None:
    """Given the API stage(s), then a `/*` `*` method setting throttles at the config values.

    Fails if: `throttling_rate_limit`/`throttling_burst_limit` are dropped from the stage's
    deploy options, or no longer come from ApiSettings.
    """
    api = stage_stack.config.api
    stages = list(resources(stage_stack).of_type("AWS::ApiGateway::Stage"))
    assert stages
    for logical_id, props in stages:
        settings = {
            (s["ResourcePath"], s["HttpMethod"]): s for s in props.get("MethodSettings", [])
        }
        every_method = settings.get(("/*", "*"))
        assert every_method is not None, logical_id
        assert every_method["ThrottlingRateLimit"] == api.throttle_rate_limit, logical_id
        assert every_method["ThrottlingBurstLimit"] == api.throttle_burst_limit, logical_id


def test_f05_a_usage_plan_bounds_the_stage_with_throttle_and_quota(
    stage_stack: Synthesized,
) -> None:
    """Given the usage plans, then one covers every API stage with the configured throttle and
    quota.

    Fails if: the usage plan, its throttle or its quota is removed, or it no longer names the
    stage.
    """
    res = resources(stage_stack)
    api = stage_stack.config.api
    plans = list(res.of_type("AWS::ApiGateway::UsagePlan"))
    stages = {logical_id for logical_id, _ in res.of_type("AWS::ApiGateway::Stage")}
    covered: set[str] = set()
    for logical_id, props in plans:
        assert props["Throttle"] == {
            "RateLimit": api.throttle_rate_limit,
            "BurstLimit": api.throttle_burst_limit,
        }, logical_id
        assert props["Quota"]["Limit"] == api.quota_limit, logical_id
        assert props["Quota"]["Period"] == api.quota_period.value, logical_id
        for api_stage in props["ApiStages"]:
            covered |= set(res.referenced(api_stage["Stage"], "AWS::ApiGateway::Stage"))
    assert plans
    assert covered == stages
