"""CodeDeploy and Lambda calls of the pre-traffic hook (F12), behind three small functions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from orders_saga import aws_clients

if TYPE_CHECKING:
    from mypy_boto3_codedeploy.literals import LifecycleEventStatusType


def revision_of(deployment_id: str) -> Mapping[str, Any]:
    """The deployment's revision: for a Lambda deployment, its AppSpec."""
    info = aws_clients.codedeploy().get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    revision: Mapping[str, Any] = info.get("revision") or {}
    return revision


def invoke_version(
    function_name: str, version: str, event: Mapping[str, Any]
) -> tuple[str | None, bytes]:
    """Invoke one published version synchronously: (FunctionError or None, payload bytes).

    The version, not the alias: the alias still routes production traffic to the old one.
    """
    response = aws_clients.lambda_().invoke(
        FunctionName=function_name,
        Qualifier=version,
        InvocationType="RequestResponse",
        Payload=json.dumps(event).encode(),
    )
    return response.get("FunctionError"), response["Payload"].read()


def report_status(deployment_id: str, execution_id: str, status: str) -> None:
    """Tell CodeDeploy the hook's verdict; it shifts traffic only after ``Succeeded``."""
    aws_clients.codedeploy().put_lifecycle_event_hook_execution_status(
        deploymentId=deployment_id,
        lifecycleEventHookExecutionId=execution_id,
        status=cast("LifecycleEventStatusType", status),
    )
