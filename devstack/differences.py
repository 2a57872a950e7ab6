"""Every way the local stack differs from AWS on purpose, by key: the rows of
docs/aws-fidelity.md (issue 10: the local stack is never kinder than AWS, or the document says
why not and which check covers the gap).

Each difference the local run makes is announced at start through ``announce``, which tags the
message with its key; ``tests/devstack/test_aws_fidelity.py`` checks that every key here has a
row in the document, every row a key, and that what a running stack announces is among them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

Say = Callable[[str], None]

DIFFERENCES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "local-ca": "PostgreSQL and the proxy present certificates from a CA made per run; the "
        "functions verify them with that bundle instead of the shipped Amazon/RDS bundles",
        "pgbouncer-for-rds-proxy": "Debian's pgbouncer in transaction mode stands where RDS "
        "Proxy stands",
        "password-for-iam-token": "the service functions log in to the proxy with a password "
        "from a local secret instead of an RDS IAM token",
        "migrate-invoked-once": "Migrate is invoked once at start instead of by the CDK trigger",
        "cdk-helpers-not-run": "CDK's own helper functions (custom resources, triggers) are not "
        "run",
        "retry-waits-scaled": "Step Functions retry waits are scaled down",
        "failed-record-retry-scaled": "a failed SQS record becomes visible again after a scaled "
        "delay instead of the queue's visibility timeout",
        "moto-throughput-shortcuts": "moto is made faster without changing its answers",
        "dynamodb-own-process": "DynamoDB is served by a second moto server in its own process",
        "sqs-message-move-tasks": "SQS message move tasks (DLQ redrive), which moto lacks, are "
        "served by the local stack; each message goes back to the DLQ's one source queue",
        "tracing-off": "Powertools Tracer off in the workers (chaos run default)",
        "ablation": "a containment switched off on purpose (chaos --without, make compare) to "
        "show the failure it contains",
    }
)
_TAG = re.compile(r"\[aws-fidelity: ([a-z0-9-]+)\]")


def announce(say: Say, key: str, message: str) -> None:
    """Say ``message`` at start, tagged with the difference it is (a row of the document)."""
    if key not in DIFFERENCES:
        raise KeyError(f"{key!r} is not a known local difference (devstack/differences.py)")
    say(f"{message} [aws-fidelity: {key}]")


def announced_keys(messages: list[str]) -> set[str]:
    """The difference keys tagged in what a local run said."""
    return {key for message in messages for key in _TAG.findall(message)}
