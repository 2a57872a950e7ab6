"""docs/openapi.json is the generator's output, and its request body is the gateway's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infra.openapi import IDEMPOTENCY_HEADER, openapi_document, render
from infra.service import this_service

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = this_service().template_path("dev", ROOT)
# Annotations that do not change what a schema accepts.
ANNOTATIONS = {"title", "description", "$schema", "examples"}


def _resolve(node: Any, components: dict[str, Any]) -> Any:
    """Inline every local $ref and drop annotations, so schemas compare by what they accept."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolve(components[node["$ref"].rsplit("/", 1)[-1]], components)
        return {k: _resolve(v, components) for k, v in node.items() if k not in ANNOTATIONS}
    if isinstance(node, list):
        return [_resolve(item, components) for item in node]
    return node


def _template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return template


def _post_orders_method(resources: dict[str, Any]) -> dict[str, Any]:
    methods = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ApiGateway::Method"
        and r["Properties"]["HttpMethod"] == "POST"
        and "RequestModels" in r["Properties"]
    ]
    assert len(methods) == 1, methods
    method: dict[str, Any] = methods[0]
    return method


def test_committed_document_is_the_generator_output() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == render(), (
        "docs/openapi.json is stale: run `python -m infra.openapi > docs/openapi.json`"
    )


def test_request_body_is_the_api_gateway_model() -> None:
    resources = _template()["Resources"]
    method = _post_orders_method(resources)
    model_id = method["RequestModels"]["application/json"]["Ref"]
    gateway_model = resources[model_id]["Properties"]["Schema"]

    document = openapi_document()
    components = document["components"]["schemas"]
    body = document["paths"]["/orders"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json"}
    openapi_body = body["content"]["application/json"]["schema"]

    assert _resolve(openapi_body, components) == _resolve(gateway_model, {})


def test_required_header_is_the_gateway_one() -> None:
    method = _post_orders_method(_template()["Resources"])
    required = {
        name.removeprefix("method.request.header.")
        for name, is_required in method["RequestParameters"].items()
        if name.startswith("method.request.header.") and is_required
    }
    parameters = openapi_document()["paths"]["/orders"]["post"]["parameters"]
    declared = {p["name"] for p in parameters if p["in"] == "header" and p["required"]}
    assert required == declared == {IDEMPOTENCY_HEADER}


def test_every_operation_is_behind_the_cognito_authorizer() -> None:
    resources = _template()["Resources"]
    methods = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Method"
    ]
    document = openapi_document()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert len(operations) == len(methods)
    assert {m["AuthorizationType"] for m in methods} == {"COGNITO_USER_POOLS"}
    scheme = document["components"]["securitySchemes"]["CognitoIdToken"]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "Authorization"}
    assert document["security"] == [{"CognitoIdToken": []}]
