"""Step handlers for the devstack tests: each reads its behaviour from the event.

``fail_times`` makes a step raise ``TransientError`` on its first N attempts *per order*, counted
in this environment's memory, so a test can watch Step Functions retry through a real worker.
"""

from __future__ import annotations

import json
import os
from typing import Any

import boto3


class TransientError(Exception):
    pass


class OutOfStock(Exception):
    pass


_attempts: dict[str, int] = {}


def reserve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    order = event["order"]
    key = f"reserve:{order['order_id']}"
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= int(order.get("fail_times", 0)):
        raise TransientError(f"attempt {_attempts[key]}")
    if order.get("out_of_stock"):
        raise OutOfStock(order["order_id"])
    return {"reserved": True, "attempt": _attempts[key], "fn": context.function_name}


def release(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"released": event["order"]["order_id"], "error": event.get("error")}


def intake(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Starts the saga per record; reports the records whose body says ``"poison": true``."""
    sfn = boto3.client("stepfunctions")
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        if body.get("poison"):
            failures.append({"itemIdentifier": record["messageId"]})
            continue
        sfn.start_execution(
            stateMachineArn=os.environ["STATE_MACHINE_ARN"],
            name=f"order-{body['order_id']}",
            input=json.dumps({"order": body}),
        )
    return {"batchItemFailures": failures}
