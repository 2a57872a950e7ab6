"""Handlers for the devstack runtime tests. This directory is their code root (/var/task).

Module-level state stands for what a real function builds at init (clients, connections):
it must survive between invocations of one environment and vanish on a cold start.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

INIT_ID = uuid.uuid4().hex
_invocations = 0


class OutOfStock(Exception):
    pass


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _invocations  # noqa: PLW0603 - per-environment state on purpose
    _invocations += 1
    action = event.get("action", "echo")
    print(json.dumps({"level": "INFO", "message": "handling", "action": action}))
    if action == "sleep":
        time.sleep(float(event["seconds"]))
    if action == "raise":
        raise OutOfStock(event.get("message", "no stock"))
    if action == "crash":
        os._exit(3)
    if action == "unserializable":
        return {"value": object()}
    if action == "stderr":
        print("to stderr", file=sys.stderr)
    return {
        "event": event,
        "init_id": INIT_ID,
        "invocations": _invocations,
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "env": {
            k: os.environ.get(k)
            for k in ("GREETING", "AWS_LAMBDA_FUNCTION_NAME", "AWS_PROFILE", "AWS_REGION")
        },
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis(),
            "log_group_name": context.log_group_name,
        },
    }
