"""Find the stack's resources: explicit options first, then the stack's CloudFormation outputs.

The output keys are the ones ``infra/stack.py`` (``_add_outputs``) declares. Outputs are read
once, and only when a command needs a resource that was not given explicitly, so the tests
need no CloudFormation at all. A running local stack publishes its outputs under the same
keys in its resource map (``ops/local_map.py``), which stand in for ``describe_stacks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from ops.aws import AwsClients, error_code, error_message
from ops.errors import NotFound, UsageError


@dataclass(frozen=True)
class ResourceKind:
    label: str
    flag: str
    output_key: str


ORDERS_DLQ: Final = ResourceKind("orders DLQ URL", "--orders-dlq-url", "OrdersDlqUrl")
NEEDS_ATTENTION: Final = ResourceKind(
    "needs-attention queue URL", "--needs-attention-url", "NeedsAttentionQueueUrl"
)
STATE_MACHINE: Final = ResourceKind("state machine ARN", "--state-machine-arn", "StateMachineArn")
INTAKE_FUNCTION: Final = ResourceKind("Intake function", "--intake-function", "IntakeFunctionName")
IDEMPOTENCY_TABLE: Final = ResourceKind("idempotency table", "--table", "IdempotencyTableName")
KINDS: Final = (ORDERS_DLQ, NEEDS_ATTENTION, STATE_MACHINE, INTAKE_FUNCTION, IDEMPOTENCY_TABLE)


class Resources:
    """Resolves each resource kind to a physical id, or says exactly how to provide it."""

    def __init__(
        self,
        clients: AwsClients,
        *,
        stack: str | None,
        explicit: Mapping[str, str | None],
        local_outputs: Mapping[str, str] | None = None,
        local_source: str = "the local stack map",
    ) -> None:
        self._clients = clients
        self._stack = stack
        # Keyed by output key, so a flag and the stack output name the same thing.
        self._explicit = {key: value for key, value in explicit.items() if value}
        # A running local stack's outputs (ops/local_map.py): read like a stack's, no call.
        self._outputs: dict[str, str] | None = (
            None if local_outputs is None else dict(local_outputs)
        )
        self._local_source = local_source if local_outputs is not None else None

    def get(self, kind: ResourceKind) -> str:
        found = self.find(kind)
        if found is None:
            if self._local_source is not None:
                where = f"{self._local_source} has no output {kind.output_key}"
            elif self._stack:
                where = f"stack {self._stack} has no output {kind.output_key}"
            else:
                where = f"no --stack to read the {kind.output_key} output from"
            raise UsageError(f"{kind.label} unknown: pass {kind.flag} ({where})")
        return found

    def find(self, kind: ResourceKind) -> str | None:
        if kind.output_key in self._explicit:
            return self._explicit[kind.output_key]
        if self._stack is None and self._outputs is None:
            return None
        return self._stack_outputs().get(kind.output_key)

    def _stack_outputs(self) -> dict[str, str]:
        if self._outputs is None:
            self._outputs = _describe_outputs(self._clients.cloudformation, self._stack or "")
        return self._outputs


def _describe_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        # CloudFormation reports a missing stack as a ValidationError, not a NotFound code.
        if error_code(error) == "ValidationError" and "does not exist" in error_message(error):
            raise NotFound(f"stack {stack} not found (region and account as configured)") from error
        raise
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {str(o["OutputKey"]): str(o["OutputValue"]) for o in outputs}


def explicit_from_args(args: Any) -> dict[str, str | None]:
    """The resource flags of a parsed command line, keyed by stack output key."""
    return {
        kind.output_key: getattr(args, kind.flag.lstrip("-").replace("-", "_"), None)
        for kind in KINDS
    }
