"""CodeDeploy BeforeAllowTraffic hook (F12): the new version proves it starts before traffic.

Shared by every deployment group (infra/deployments.py). The decision is in
``logic/pre_traffic_check.py``; this handler parses the event and always reports a status, because
CodeDeploy otherwise waits up to an hour for one before it fails the deployment.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga.adapters.deployments import report_status
from orders_saga.logic.pre_traffic_check import (
    HookStatus,
    LifecycleHookEvent,
    pre_traffic_verdict,
)
from orders_saga.observability import logger, trace_calls_to, tracer

trace_calls_to(("botocore",))  # CodeDeploy and Lambda


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Without both ids there is nothing to report to: let it fail loudly (F11).
    hook = LifecycleHookEvent.model_validate(event)
    logger.append_keys(deployment_id=hook.deployment_id)
    target, verdict = pre_traffic_verdict(hook.deployment_id)
    where = None if target is None else f"{target.function_name}:{target.target_version}"
    log = logger.info if verdict.status is HookStatus.SUCCEEDED else logger.error
    log(
        "pre-traffic check",
        extra={"target": where, "status": verdict.status.value, "reason": verdict.reason},
    )
    # A failure to report is raised, not swallowed: it shows in this function's errors, and
    # CodeDeploy fails the deployment when its wait for a status runs out.
    report_status(hook.deployment_id, hook.execution_id, verdict.status.value)
    return {"status": verdict.status.value, "target": where, "reason": verdict.reason}
