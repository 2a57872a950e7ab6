"""SQS and Step Functions calls behind small functions (the intake's and API's side effects)."""

from __future__ import annotations

import json
from typing import Any

from orders_saga import aws_clients
from orders_saga.logic.order_identity import execution_name_for
from orders_saga.models import Order, OrderAcceptedV2


def publish_order_accepted(queue_url: str, message: OrderAcceptedV2) -> str:
    response = aws_clients.sqs().send_message(
        QueueUrl=queue_url,
        MessageBody=message.model_dump_json(),
        MessageAttributes={
            "schema_version": {"DataType": "String", "StringValue": message.schema_version},
            "correlation_id": {"DataType": "String", "StringValue": message.order_id},
        },
    )
    return response["MessageId"]


# SQS's 256 KiB counts the body and every attribute's name, type and value (F11).
SQS_MAX_MESSAGE_BYTES = 256 * 1024
MAX_REASON_CHARS = 1000


def _attribute_bytes(name: str, value: str) -> int:
    return len(name.encode()) + len("String") + len(value.encode())


def dead_letter(queue_url: str, body: str, *, reason: str, source_message_id: str) -> None:
    """Park a message that can never succeed, with its reason, instead of retrying it (F02).

    The attributes are cut to what still fits next to the body: a message that arrived near
    SQS's size limit must still be parked, or parking fails and the record enters the retry
    loop the DLQ exists to avoid (F11). The full reason is in the intake's log line."""
    room = SQS_MAX_MESSAGE_BYTES - len(body.encode())
    attributes: dict[str, Any] = {}
    for name, value, whole in (
        ("source_message_id", source_message_id, True),
        ("failure_reason", reason[:MAX_REASON_CHARS], False),
    ):
        text = value.encode()[: max(0, room - _attribute_bytes(name, ""))].decode(errors="ignore")
        if text and (text == value or not whole):
            attributes[name] = {"DataType": "String", "StringValue": text}
            room -= _attribute_bytes(name, text)
    aws_clients.sqs().send_message(
        QueueUrl=queue_url, MessageBody=body, MessageAttributes=attributes
    )


def start_saga(state_machine_arn: str, order: Order) -> dict[str, Any]:
    """Start the order's execution; an existing one with that name counts as started (F01)."""
    sfn = aws_clients.stepfunctions()
    name = execution_name_for(order.order_id)
    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn,
            name=name,
            input=json.dumps({"order": order.model_dump(mode="json")}),
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        return {"execution_name": name, "already_started": True}
    return {
        "execution_name": name,
        "execution_arn": response["executionArn"],
        "already_started": False,
    }
