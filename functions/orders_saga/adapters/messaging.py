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


def dead_letter(queue_url: str, body: str, *, reason: str, source_message_id: str) -> None:
    """Park a message that can never succeed, with its reason, instead of retrying it (F02)."""
    aws_clients.sqs().send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageAttributes={
            "failure_reason": {"DataType": "String", "StringValue": reason[:1000]},
            "source_message_id": {"DataType": "String", "StringValue": source_message_id},
        },
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
