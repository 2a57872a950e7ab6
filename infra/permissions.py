"""Grants that no handler's own AWS call uses, each with its reason: the one table (F20).

tests/catalogue/test_f20_least_privilege.py records every AWS call each function makes in the
local stack and evaluates it against the function's own synthesized role. Every (action,
resource) a role allows must be used by one of that function's calls, or be listed here. The
table lives in infra/, next to the grants, so that a new grant and its reason are reviewed
together; an entry that no role grants any more fails the test as stale.

Keys are (function, IAM action); ``ANY_FUNCTION`` covers every function whose role has it.
An entry marked ``event_source_only`` excuses the action only on the queue the function's own
event source mapping reads, not on any other resource the role may name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

ANY_FUNCTION: Final = "*"


@dataclass(frozen=True)
class NotCalled:
    reason: str
    event_source_only: bool = False


_LAMBDA_LOGS: Final = (
    "the Lambda service writes the function's stdout/stderr to its own log group with this "
    "role (F13); the handler never calls CloudWatch Logs"
)
_XRAY: Final = (
    "active tracing (F13): the Lambda service and the X-Ray SDK's daemon in the sandbox send "
    "segments with this role; the handler makes no X-Ray API call"
)
_VPC_ENI: Final = (
    "Lambda itself creates, describes and deletes the VPC function's network interfaces with "
    "this role (AWSLambdaVPCAccessExecutionRole's set); no resource-level scoping exists"
)
_ESM: Final = (
    "the SQS event source mapping (the Lambda service, with Intake's role) receives, deletes "
    "and returns the orders queue's messages; CDK's SqsEventSource grants its consume set. "
    "Locally devstack/event_source.py plays that part, not the handler"
)
_IDEMPOTENCY_GET: Final = (
    "Powertools idempotency reads the stored record only when a conditional put fails without "
    "returning it; with ReturnValuesOnConditionCheckFailure (boto3 >= 1.26.164) DynamoDB "
    "returns it, so the read is a fallback that must not fail closed on AccessDenied"
)
_IDEMPOTENCY_DELETE: Final = (
    "Powertools idempotency deletes the in-progress record when the wrapped unit raises, so "
    "the retry can run (F01); a function that did not fail in the recorded runs shows no delete"
)

_ESM_GRANT: Final = NotCalled(_ESM, event_source_only=True)

NOT_CALLED_BY_HANDLERS: Final[Mapping[tuple[str, str], NotCalled]] = {
    (ANY_FUNCTION, "logs:CreateLogStream"): NotCalled(_LAMBDA_LOGS),
    (ANY_FUNCTION, "logs:PutLogEvents"): NotCalled(_LAMBDA_LOGS),
    (ANY_FUNCTION, "xray:PutTraceSegments"): NotCalled(_XRAY),
    (ANY_FUNCTION, "xray:PutTelemetryRecords"): NotCalled(_XRAY),
    (ANY_FUNCTION, "ec2:CreateNetworkInterface"): NotCalled(_VPC_ENI),
    (ANY_FUNCTION, "ec2:DescribeNetworkInterfaces"): NotCalled(_VPC_ENI),
    (ANY_FUNCTION, "ec2:DescribeSubnets"): NotCalled(_VPC_ENI),
    (ANY_FUNCTION, "ec2:DeleteNetworkInterface"): NotCalled(_VPC_ENI),
    (ANY_FUNCTION, "ec2:AssignPrivateIpAddresses"): NotCalled(_VPC_ENI),
    (ANY_FUNCTION, "ec2:UnassignPrivateIpAddresses"): NotCalled(_VPC_ENI),
    ("Intake", "sqs:ReceiveMessage"): _ESM_GRANT,
    ("Intake", "sqs:DeleteMessage"): _ESM_GRANT,
    ("Intake", "sqs:ChangeMessageVisibility"): _ESM_GRANT,
    ("Intake", "sqs:GetQueueAttributes"): _ESM_GRANT,
    ("Intake", "sqs:GetQueueUrl"): _ESM_GRANT,
    (ANY_FUNCTION, "dynamodb:GetItem"): NotCalled(_IDEMPOTENCY_GET),
    (ANY_FUNCTION, "dynamodb:DeleteItem"): NotCalled(_IDEMPOTENCY_DELETE),
}


def justification(function: str, action: str) -> NotCalled | None:
    """Why ``function`` may hold ``action`` without calling it, or None."""
    key = action.lower()
    for (who, what), entry in NOT_CALLED_BY_HANDLERS.items():
        if what.lower() == key and who in {function, ANY_FUNCTION}:
            return entry
    return None
