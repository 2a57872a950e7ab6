"""A handler that makes one AWS call, for the call recorder's worker test (F20).

Its client is built at import, as the real handlers build theirs at init, and points at a
closed loopback port: the call is attempted (and so recorded) but never reaches anything.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

SQS = boto3.client(
    "sqs",
    region_name="eu-west-1",
    endpoint_url="http://127.0.0.1:1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    config=Config(connect_timeout=0.5, retries={"total_max_attempts": 1}),
)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with contextlib.suppress(EndpointConnectionError):
        SQS.send_message(QueueUrl=event["queue_url"], MessageBody="probe")
    return {"recorder_variable_visible": "DEVSTACK_CALL_LOG_DIR" in os.environ}
