"""F12 Brittle deployments: a bad version never takes traffic, and prod never takes a new
version all at once.

Contain: CodeDeploy groups on every function's ``live`` alias with stage-specific traffic
shifting and alarm-driven rollback (infra/deployments.py, infra/config.py), and the
BeforeAllowTraffic hook (functions/orders_saga/handlers/pre_traffic_hook.py) that invokes the
new version with a health-check event and reports ``Failed`` unless it answers healthy.

The template side is proven in depth by tests/infra/test_deployments.py (both stages: groups,
rollback events, alarms on the new version only, hook wiring and permissions); this module
keeps the row's core prod assertion and adds what those tests cannot show: the real hook
against real bad versions. The versions are published in the session local stack's moto
(``running``), copies of the Intake function with its real environment, and each invoke of a
version runs in a fresh execution environment (a ``devstack.lambda_runtime`` worker process)
built from *that version's* handler and environment, as Lambda runs a published version.

moto 5.2.5 implements CodeDeploy ``GetDeployment`` (the hook reads the real deployment) but
not ``PutLifecycleEventHookExecutionStatus``: that one call is answered by botocore's
``Stubber`` (which validates its parameters against the API model) and every call is counted.
moto 5.2.5 also ignores Invoke's ``Qualifier`` query parameter (it reads ``qualifier``) and
would run ``$LATEST``: an event hook on the hook's Lambda client records the parameters the
hook sent, then moves the qualifier into the function name (``name:2``), which AWS and moto
both read as the same version.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.stub import Stubber
from moto.awslambda import models as lambda_models

from devstack.lambda_runtime import FunctionConfig, FunctionWorker, LogRecord
from infra.config import PRE_TRAFFIC_HOOK
from tests.fixtures import reset_function_caches
from tests.infra.conftest import Synthesized
from tests.infra.test_deployments import DEPLOYED, alarm_names_of, alias_update, group_of, refs
from tests.localstack import Running

CANARY = "CodeDeployDefault.LambdaCanary10Percent5Minutes"
ALIAS = "live"
HOOK_EXECUTION_ID = "f12-hook-execution"


# -- prod: a canary, rolled back by the new version's alarms --------------------------------


def test_f12_prod_shifts_every_function_as_a_canary_rolled_back_by_its_alarms(
    synthesized: dict[str, Synthesized],
) -> None:
    """Given the synthesized prod template, then every function's live alias is updated by
    CodeDeploy as a 10 % canary for 5 minutes, gated by the pre-traffic hook, and rolled
    back automatically when its own error or p99 latency alarm fires.

    Fails if: prod's traffic_shifting goes back to all-at-once, a group loses its alarms or
    DEPLOYMENT_STOP_ON_ALARM, or an alias loses its BeforeAllowTraffic hook.
    """
    prod = synthesized["prod"]
    (hook,) = [
        lid
        for lid, fn in prod.resources("AWS::Lambda::Function").items()
        if fn["Properties"].get("Handler", "").endswith("pre_traffic_hook.handler")
    ]
    assert prod.config.deployment.traffic_shifting.deployment_config_name == CANARY
    for name in DEPLOYED:
        group = group_of(prod, name)["Properties"]
        assert group["DeploymentConfigName"] == CANARY, name
        assert group["AutoRollbackConfiguration"]["Enabled"] is True, name
        assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"], name
        assert group["AlarmConfiguration"]["Enabled"] is True, name
        alarms = alarm_names_of(prod, {"Properties": group})
        assert {f"F12-{name}-errors", f"F12-{name}-latency-p99"} <= set(alarms), name
        assert refs(alias_update(prod, name)["BeforeAllowTrafficHook"]) == [hook], name
    assert PRE_TRAFFIC_HOOK not in DEPLOYED


# -- the hook against real versions ---------------------------------------------------------


@dataclass
class VersionRuntime:
    """moto's Lambda invoke for the functions created here: one fresh execution environment
    per invoke, built from the invoked version's handler and environment. Invokes of other
    functions go to whatever handled them before (the local stack's worker pools)."""

    previous: Callable[..., tuple[str, bool, str]]
    aws_env: dict[str, str]
    region: str
    functions: set[str] = field(default_factory=set)
    invoked: list[tuple[str, str, Any]] = field(default_factory=list)  # (name, version, event)
    logs: list[LogRecord] = field(default_factory=list)

    def __call__(self, fn: Any, event: Any = None) -> tuple[str, bool, str]:
        if fn.function_name not in self.functions:
            return self.previous(fn, event)
        payload = json.loads(event) if isinstance(event, (str, bytes)) else event
        self.invoked.append((fn.function_name, str(fn.version), payload))
        worker = FunctionWorker(
            FunctionConfig(
                function_name=fn.function_name,
                handler=fn.handler,
                timeout_s=float(fn.timeout),
                environment={**fn.environment_vars, **self.aws_env},
                region=self.region,
                version=str(fn.version),
            ),
            log_sink=self.logs.append,
        )
        try:
            result = worker.invoke(payload)
        finally:
            worker.stop()
        return result.payload, result.errored, ""


def empty_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "f12: the code runs in a local worker process\n")
    return buffer.getvalue()


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    function_name: str
    current_version: str
    target_version: str


@dataclass
class DeployWorld:
    """A copy of the local stack's Intake function (live alias on a healthy version 1) and a
    CodeDeploy group in moto; ``deploy`` publishes a changed version 2 and starts a
    deployment of it, as CloudFormation's CodeDeployLambdaAliasUpdate does."""

    running: Running
    runtime: VersionRuntime
    reported: list[dict[str, Any]]  # PutLifecycleEventHookExecutionStatus parameters
    sent: list[dict[str, Any]]  # Invoke parameters, as the hook sent them

    def __post_init__(self) -> None:
        resources = self.running.stack.resources
        assert resources is not None
        intake = resources.function("intake")
        self.handler = intake.config.handler
        self.timeout = int(intake.config.timeout_s)
        # What the template gives the function (the runtime adds the AWS endpoint back).
        self.environment = {
            key: value
            for key, value in intake.config.environment.items()
            if key not in resources.aws_env
        }
        self.suffix = uuid.uuid4().hex[:8]
        self.lam = self._client("lambda")
        self.codedeploy = self._client("codedeploy")
        self.role = self._client("iam").create_role(
            RoleName=f"f12-{self.suffix}", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        self.application = f"f12-{self.suffix}"
        self.codedeploy.create_application(
            applicationName=self.application, computePlatform="Lambda"
        )
        self.codedeploy.create_deployment_group(
            applicationName=self.application,
            deploymentGroupName="intake",
            serviceRoleArn=self.role,
            deploymentConfigName="CodeDeployDefault.LambdaAllAtOnce",
            deploymentStyle={
                "deploymentType": "BLUE_GREEN",
                "deploymentOption": "WITH_TRAFFIC_CONTROL",
            },
        )

    def _client(self, service: str) -> Any:
        aws = self.running.stack.aws
        assert aws is not None
        return aws.client(service)

    def deploy(self, name: str, **change: Any) -> Deployment:
        function_name = f"f12-{name}-{self.suffix}"
        self.runtime.functions.add(function_name)
        self.lam.create_function(
            FunctionName=function_name,
            Runtime="python3.13",
            Role=self.role,
            Handler=self.handler,
            Timeout=self.timeout,
            Code={"ZipFile": empty_zip()},  # the code runs in the worker, from functions/
            Environment={"Variables": self.environment},
        )
        current = self.lam.publish_version(FunctionName=function_name)["Version"]
        self.lam.create_alias(FunctionName=function_name, Name=ALIAS, FunctionVersion=current)
        self.lam.update_function_configuration(
            FunctionName=function_name, Description=f"f12 {name}", **change
        )
        target = self.lam.publish_version(FunctionName=function_name)["Version"]
        app_spec = {
            "version": 0.0,
            "Resources": [
                {
                    "Target": {
                        "Type": "AWS::Lambda::Function",
                        "Properties": {
                            "Name": function_name,
                            "Alias": ALIAS,
                            "CurrentVersion": current,
                            "TargetVersion": target,
                        },
                    }
                }
            ],
            "Hooks": [{"BeforeAllowTraffic": "pre-traffic-hook"}],
        }
        deployment_id = self.codedeploy.create_deployment(
            applicationName=self.application,
            deploymentGroupName="intake",
            revision={
                "revisionType": "AppSpecContent",
                "appSpecContent": {"content": json.dumps(app_spec)},
            },
        )["deploymentId"]
        return Deployment(deployment_id, function_name, current, target)

    def run_hook(self, deployment: Deployment, context: LambdaContext) -> dict[str, Any]:
        from orders_saga.handlers import pre_traffic_hook

        result: dict[str, Any] = pre_traffic_hook.handler(
            {
                "DeploymentId": deployment.deployment_id,
                "LifecycleEventHookExecutionId": HOOK_EXECUTION_ID,
            },
            context,
        )
        return result

    def live_version(self, deployment: Deployment) -> str:
        alias = self.lam.get_alias(FunctionName=deployment.function_name, Name=ALIAS)
        return str(alias["FunctionVersion"])


@pytest.fixture
def deploy_world(running: Running, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeployWorld]:
    resources = running.stack.resources
    assert resources is not None
    # The hook runs here, in-process, against the local stack's moto (its clients read
    # AWS_ENDPOINT_URL when they are built); a new version's cold start may take a while.
    monkeypatch.setenv("AWS_ENDPOINT_URL", resources.endpoint_url)
    # ... in the stack's region (service.yml's dev region, not necessarily the suite's).
    monkeypatch.setenv("AWS_REGION", resources.region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", resources.region)
    monkeypatch.setenv("AWS_READ_TIMEOUT_S", "60")
    reset_function_caches()
    runtime = VersionRuntime(
        previous=lambda_models.LambdaFunction._invoke_lambda,
        aws_env=dict(resources.aws_env),
        region=resources.region,
    )

    def invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
        return runtime(fn, event)

    monkeypatch.setattr(lambda_models.LambdaFunction, "_invoke_lambda", invoke_lambda)

    from orders_saga import aws_clients

    sent: list[dict[str, Any]] = []

    def qualifier_in_name(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))
        if "Qualifier" in params:  # see the module docstring (moto reads `qualifier`)
            params["FunctionName"] = f"{params['FunctionName']}:{params.pop('Qualifier')}"

    hook_lambda = aws_clients.lambda_()
    hook_lambda.meta.events.register("before-parameter-build.lambda.Invoke", qualifier_in_name)

    # The one call moto lacks: answered by a Stubber on a twin client, every call recorded.
    reported: list[dict[str, Any]] = []
    twin = boto3.client("codedeploy", region_name=resources.region)
    stubber = Stubber(twin)
    stubber.activate()

    def put_status(**params: Any) -> Any:
        reported.append(params)
        stubber.add_response(
            "put_lifecycle_event_hook_execution_status",
            {"lifecycleEventHookExecutionId": params["lifecycleEventHookExecutionId"]},
            params,
        )
        return twin.put_lifecycle_event_hook_execution_status(**params)

    monkeypatch.setattr(
        aws_clients.codedeploy(), "put_lifecycle_event_hook_execution_status", put_status
    )
    try:
        yield DeployWorld(running, runtime, reported, sent)
    finally:
        hook_lambda.meta.events.unregister(
            "before-parameter-build.lambda.Invoke", qualifier_in_name
        )
        stubber.deactivate()
        reset_function_caches()


def without(environment: dict[str, str], name: str) -> dict[str, Any]:
    return {"Environment": {"Variables": {k: v for k, v in environment.items() if k != name}}}


CASES = {
    # name: (the change version 2 brings, the status the hook must report, the reason it gives)
    "healthy": ({}, "Succeeded", "is healthy"),
    "missing-config": (None, "Failed", "STATE_MACHINE_ARN"),
    "cannot-import": (
        {"Handler": "orders_saga.handlers.intake_v2.handler"},
        "Failed",
        "Runtime.ImportModuleError",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_f12_the_pre_traffic_hook_reports_each_new_versions_real_health(
    case: str, deploy_world: DeployWorld, lambda_context: LambdaContext
) -> None:
    """Given a function whose live alias is on a healthy version 1 and a deployment to a
    version 2 that is healthy / lost STATE_MACHINE_ARN from its configuration / names a
    handler module its package does not have, when CodeDeploy runs the hook, then the hook
    invokes version 2 (never the alias) in its own fresh environment and reports to CodeDeploy
    exactly once: Succeeded for the healthy version, Failed with the reason otherwise.

    Fails if: the hook invokes the alias or $LATEST instead of TargetVersion, a handler's
    health-check branch stops reading its configuration (the missing setting would pass), a
    failed invoke is reported Succeeded, or the hook reports twice or not at all.
    """
    world = deploy_world
    change, status, reason = CASES[case]
    if change is None:
        change = without(world.environment, "STATE_MACHINE_ARN")

    # Given
    deployment = world.deploy(case, **change)

    # When
    result = world.run_hook(deployment, lambda_context)

    # Then the new version, and only it, was invoked with the health-check event
    assert [(p["FunctionName"], p["Qualifier"]) for p in world.sent] == [
        (deployment.function_name, deployment.target_version)
    ]
    assert [(v, e) for _, v, e in world.runtime.invoked] == [
        (deployment.target_version, {"orders_saga_health_check": True})
    ]
    assert deployment.target_version != deployment.current_version
    # ... and CodeDeploy heard the verdict exactly once
    assert world.reported == [
        {
            "deploymentId": deployment.deployment_id,
            "lifecycleEventHookExecutionId": HOOK_EXECUTION_ID,
            "status": status,
        }
    ]
    assert result["status"] == status
    assert reason in result["reason"]
    assert result["target"] == f"{deployment.function_name}:{deployment.target_version}"
    # The hook never moves the alias: traffic stays on version 1 until CodeDeploy shifts it.
    assert world.live_version(deployment) == deployment.current_version


def test_f12_the_live_version_of_a_failed_deployment_is_still_healthy(
    deploy_world: DeployWorld, lambda_context: LambdaContext
) -> None:
    """Given a deployment whose version 2 lost its configuration, when the hook has failed it,
    then version 1 behind the alias still answers healthy: the verdict is about the version,
    not the function, so a rollback leaves a working alias.

    Fails if: the bad configuration leaked into the published version 1 (versions must be
    immutable snapshots of code and configuration) or the hook judged the function instead
    of the target version.
    """
    world = deploy_world
    deployment = world.deploy("rollback", **without(world.environment, "STATE_MACHINE_ARN"))
    assert world.run_hook(deployment, lambda_context)["status"] == "Failed"

    answer = world.lam.invoke(
        FunctionName=f"{deployment.function_name}:{ALIAS}",  # moto ignores Qualifier
        Payload=json.dumps({"orders_saga_health_check": True}).encode(),
    )

    assert "FunctionError" not in answer
    assert json.loads(answer["Payload"].read()) == {"healthy": True, "function": "intake"}
    assert [v for _, v, _ in world.runtime.invoked] == [
        deployment.target_version,
        deployment.current_version,
    ]
    assert [r["status"] for r in world.reported] == ["Failed"]
