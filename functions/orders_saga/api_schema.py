"""JSON Schema (draft 4) for API Gateway request models, generated from the pydantic models.

One source of truth (F11): the gateway rejects at the edge exactly what pydantic would reject
in the function, so a bad body never costs an invocation. API Gateway models speak draft 4 and
cannot follow ``$defs`` references, so definitions are inlined.
"""

from __future__ import annotations

from typing import Any

from orders_saga.models import PlaceOrderRequest

DRAFT_4 = "http://json-schema.org/draft-04/schema#"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _inline(defs[name], defs)
        return {key: _inline(value, defs) for key, value in node.items() if key != "title"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def place_order_json_schema() -> dict[str, Any]:
    schema = PlaceOrderRequest.model_json_schema()
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    return {"$schema": DRAFT_4, "title": "PlaceOrderRequest", **inlined}
