"""The template reader and intrinsic resolver: what the devstack believes the stack says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devstack.template import CfnTemplate, Resolver, TemplateError
from infra.service import this_service
from tests.devstack.mini_stack import ORDER_SCHEMA, template_body


def _resolver(extra: dict[str, Any] | None = None) -> Resolver:
    body = {
        "Conditions": {
            "IsProd": {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]},
            "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
        },
        "Mappings": {"Layer": {"eu-west-1": {"arn": "arn:layer:eu"}}},
        "Resources": {
            "Queue": {"Type": "AWS::SQS::Queue", "Properties": {}},
            **(extra or {}),
        },
    }
    resolver = Resolver(CfnTemplate(body, stack_name="S", region="eu-west-1"))
    resolver.register("Queue", "http://q/url", Arn="arn:aws:sqs:eu-west-1:123456789012:q")
    return resolver


def test_pseudo_parameters_and_refs_resolve_to_local_values() -> None:
    r = _resolver()
    assert r.resolve({"Ref": "AWS::Region"}) == "eu-west-1"
    assert r.resolve({"Ref": "AWS::AccountId"}) == "123456789012"
    assert r.resolve({"Ref": "AWS::Partition"}) == "aws"
    assert r.resolve({"Ref": "AWS::URLSuffix"}) == "amazonaws.com"
    assert r.resolve({"Ref": "Queue"}) == "http://q/url"
    assert r.resolve({"Fn::GetAtt": ["Queue", "Arn"]}).endswith(":q")
    assert r.resolve({"Fn::GetAtt": "Queue.Arn"}).endswith(":q")


def test_join_sub_select_split() -> None:
    r = _resolver()
    assert r.resolve({"Fn::Join": [":", ["a", {"Ref": "AWS::Region"}]]}) == "a:eu-west-1"
    assert (
        r.resolve({"Fn::Sub": "arn:${AWS::Partition}:x:${Queue.Arn}/${!Literal}"})
        == "arn:aws:x:arn:aws:sqs:eu-west-1:123456789012:q/${Literal}"
    )
    assert r.resolve({"Fn::Sub": ["${A}-${Queue}", {"A": {"Ref": "AWS::Region"}}]}) == (
        "eu-west-1-http://q/url"
    )
    assert r.resolve({"Fn::Select": [1, {"Fn::Split": ["/", "a/b/c"]}]}) == "b"


def test_conditions_mappings_and_no_value() -> None:
    r = _resolver()
    assert r.resolve({"Fn::If": ["IsProd", "big", "small"]}) == "small"
    assert r.resolve({"Fn::If": ["NotProd", "yes", "no"]}) == "yes"
    assert r.resolve({"Fn::FindInMap": ["Layer", {"Ref": "AWS::Region"}, "arn"]}) == "arn:layer:eu"
    assert r.resolve({"A": {"Ref": "AWS::NoValue"}, "B": 1}) == {"B": 1}
    assert r.resolve([{"Fn::If": ["IsProd", "x", {"Ref": "AWS::NoValue"}]}, "y"]) == ["y"]


def test_a_resource_the_devstack_does_not_create_is_an_error_not_a_guess() -> None:
    r = _resolver({"Proxy": {"Type": "AWS::RDS::DBProxy", "Properties": {}}})
    with pytest.raises(TemplateError, match="Proxy"):
        r.resolve({"Fn::GetAtt": ["Proxy", "Endpoint"]})
    with pytest.raises(TemplateError, match="unsupported intrinsic"):
        r.resolve({"Fn::ImportValue": "x"})


def test_typed_views_of_the_cdk_shaped_template() -> None:
    t = CfnTemplate(template_body(), stack_name="Mini", region="eu-west-1")
    queue = t.queue("OrdersQueue")
    assert queue.visibility_timeout_s == 30
    assert queue.redrive is not None
    assert queue.redrive.dead_letter_queue_logical_id == "OrdersDlq"
    assert queue.redrive.max_receive_count == 3
    assert t.queue("AttentionQueue").message_retention_s == 345_600  # SQS default

    (esm,) = t.event_source_mappings()
    assert (esm.function_logical_id, esm.target_logical_id) == ("Intake", "IntakeAlias")
    assert esm.batch_size == 5
    assert esm.report_batch_item_failures
    assert esm.maximum_concurrency == 2

    intake = t.function_by_handler("saga_probe.intake")
    assert (intake.timeout_s, intake.memory_mb) == (10, 256)
    assert [a.name for a in t.aliases()] == ["live"] * 4


def test_api_methods_paths_validation_and_models() -> None:
    t = CfnTemplate(template_body(), stack_name="Mini", region="eu-west-1")
    methods = {m.logical_id: m for m in t.api_methods()}
    post = methods["PostOrders"]
    assert (post.http_method, post.path) == ("POST", "/orders")
    assert post.required_headers == ("Idempotency-Key",)
    assert post.validate_body
    assert post.authorization_type == "COGNITO_USER_POOLS"
    assert post.integration_target_logical_id == "ApiAlias"
    assert t.api_model_schema(post.request_models["application/json"]) == ORDER_SCHEMA
    assert methods["GetOrder"].path == "/orders/{order_id}"
    assert t.api_stage_name() == "dev"
    responses = t.gateway_responses()
    assert responses["BAD_REQUEST_BODY"].status_code == 400
    assert responses["BAD_REQUEST_BODY"].headers == {"Access-Control-Allow-Origin": "*"}


def test_load_reads_the_region_from_the_cloud_assembly(tmp_path: Path) -> None:
    (tmp_path / "Mini.template.json").write_text(json.dumps(template_body()))
    (tmp_path / "manifest.json").write_text(
        json.dumps({"artifacts": {"Mini": {"environment": "aws://unknown-account/eu-central-1"}}})
    )
    assert CfnTemplate.load(tmp_path, "Mini").region == "eu-central-1"
    with pytest.raises(TemplateError, match="cdk synth"):
        CfnTemplate.load(tmp_path, "Missing")


def test_the_synthesized_stack_when_present_maps_to_the_contract() -> None:
    path = this_service().template_path("dev", Path(__file__).resolve().parents[2])
    if not path.is_file():
        pytest.skip("cdk.out not synthesized")
    t = CfnTemplate.load(path.parent, this_service().stack("dev"))
    handlers = {f.handler for f in t.functions()}
    assert "orders_saga.handlers.intake.handler" in handlers
    (esm,) = t.event_source_mappings()
    assert t.function(esm.function_logical_id).handler == "orders_saga.handlers.intake.handler"
    assert esm.report_batch_item_failures
    post = next(m for m in t.api_methods() if m.http_method == "POST")
    assert "Idempotency-Key" in post.required_headers
