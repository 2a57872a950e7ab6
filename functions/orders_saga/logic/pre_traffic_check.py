"""The pre-traffic hook's side of the health check (F12): which version to test, the verdict.

The function side (the dry-run event and its report) is ``logic/health_check.py``; see its
docstring for the whole protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orders_saga.adapters import deployments
from orders_saga.logic.health_check import health_check_event

# How much of a failing answer is kept in the hook's verdict (it goes to the logs).
REASON_MAX_CHARS: Final = 500


class HookStatus(StrEnum):
    # The only two values PutLifecycleEventHookExecutionStatus accepts from a hook.
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class InvalidAppSpec(ValueError):
    """The deployment's AppSpec does not name one Lambda function and its target version."""


class LifecycleHookEvent(BaseModel):
    """What CodeDeploy sends a BeforeAllowTraffic hook (F11: validated like any input)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    deployment_id: str = Field(alias="DeploymentId", min_length=1)
    execution_id: str = Field(alias="LifecycleEventHookExecutionId", min_length=1)


class LambdaTarget(BaseModel):
    """One ``AWS::Lambda::Function`` resource of a Lambda AppSpec."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    function_name: str = Field(alias="Name", min_length=1)
    alias: str = Field(alias="Alias", min_length=1)
    current_version: str = Field(alias="CurrentVersion", min_length=1)
    target_version: str = Field(alias="TargetVersion", min_length=1)

    @field_validator("current_version", "target_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # A JSON AppSpec may carry the version as a number.
        return str(value) if isinstance(value, int) else value


@dataclass(frozen=True)
class InvokeOutcome:
    """What came back from invoking the new version."""

    function_error: str | None  # Lambda's FunctionError ("Unhandled"), None when it returned
    payload: bytes


@dataclass(frozen=True)
class Verdict:
    status: HookStatus
    reason: str


def app_spec_content(revision: Mapping[str, Any]) -> str:
    """The AppSpec text of a Lambda deployment's revision (``AppSpecContent`` or ``String``)."""
    kind = revision.get("revisionType")
    holder = {"AppSpecContent": "appSpecContent", "String": "string"}.get(str(kind))
    content = (revision.get(holder) or {}).get("content") if holder else None
    if not isinstance(content, str) or not content.strip():
        raise InvalidAppSpec(f"deployment revision has no AppSpec content (type {kind!r})")
    return content


_YAML_SCALAR = re.compile(
    r"^\s*(Name|Alias|CurrentVersion|TargetVersion)\s*:\s*['\"]?([^'\"\s#]+)", re.MULTILINE
)


def lambda_target(content: str) -> LambdaTarget:
    """The function and versions a Lambda AppSpec shifts between.

    CloudFormation writes the AppSpec as JSON; CodeDeploy also accepts YAML, whose four
    scalar properties are read without a YAML library (the runtime has none).
    """
    try:
        document = json.loads(content)
    except json.JSONDecodeError:
        properties: dict[str, Any] = dict(_YAML_SCALAR.findall(content))
    else:
        properties = _json_lambda_properties(document)
    try:
        return LambdaTarget.model_validate(properties)
    except ValidationError as error:
        raise InvalidAppSpec(
            f"AppSpec names no Lambda function and versions: {error.errors(include_url=False)}"
        ) from error


def _json_lambda_properties(document: object) -> dict[str, Any]:
    resources = document.get("Resources") if isinstance(document, Mapping) else None
    functions = [
        resource.get("Properties") or {}
        for entry in resources or []
        if isinstance(entry, Mapping)
        for resource in entry.values()
        if isinstance(resource, Mapping) and resource.get("Type") == "AWS::Lambda::Function"
    ]
    if len(functions) != 1:
        # A Lambda AppSpec shifts exactly one function's alias.
        raise InvalidAppSpec(f"expected one AWS::Lambda::Function in the AppSpec, not {functions}")
    return dict(functions[0])


def verdict(target: LambdaTarget, outcome: InvokeOutcome) -> Verdict:
    """Succeeded only for a clean ``{"healthy": true}`` from the new version."""
    where = f"{target.function_name}:{target.target_version}"
    text = outcome.payload.decode("utf-8", errors="replace")[:REASON_MAX_CHARS]
    if outcome.function_error:
        return Verdict(HookStatus.FAILED, f"{where} raised ({outcome.function_error}): {text}")
    try:
        answer = json.loads(outcome.payload or b"null")
    except json.JSONDecodeError:
        return Verdict(HookStatus.FAILED, f"{where} answered with no JSON: {text}")
    if not isinstance(answer, Mapping) or answer.get("healthy") is not True:
        return Verdict(HookStatus.FAILED, f"{where} is not healthy: {text}")
    return Verdict(HookStatus.SUCCEEDED, f"{where} is healthy")


def pre_traffic_verdict(deployment_id: str) -> tuple[LambdaTarget | None, Verdict]:
    """Test the deployment's new version; every failure on the way is a ``Failed`` verdict."""
    target: LambdaTarget | None = None
    try:
        target = lambda_target(app_spec_content(deployments.revision_of(deployment_id)))
        function_error, payload = deployments.invoke_version(
            target.function_name, target.target_version, health_check_event()
        )
        return target, verdict(target, InvokeOutcome(function_error, payload))
    except Exception as error:  # noqa: BLE001 - a hook that raises leaves CodeDeploy waiting
        # for a status for up to an hour; report Failed at once and say why instead.
        return target, Verdict(HookStatus.FAILED, f"{type(error).__name__}: {error}")
