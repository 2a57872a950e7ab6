"""An API handler for the gateway tests: echoes what API Gateway handed it."""

from __future__ import annotations

import json
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.loads(event["body"]) if event.get("body") else None
    if isinstance(body, dict) and body.get("explode"):
        raise RuntimeError("boom")
    if isinstance(body, dict) and body.get("malformed"):
        return {"body": "no status code"}
    return {
        "statusCode": 202,
        "headers": {"Content-Type": "application/json", "X-Probe": "yes"},
        "body": json.dumps({"event": event, "invoked_arn": context.invoked_function_arn}),
    }
