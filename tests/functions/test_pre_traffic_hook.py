"""F12: the pre-traffic hook lets a new version take traffic only when it proves healthy, and
the health-check branch of every handler touches nothing but its configuration.

Hook tests run against the session's moto server: a real CodeDeploy deployment whose AppSpec
names the function and its versions (moto stores the revision), and a real moto Lambda
function whose invoke runs the target handler in this process (MOTO-NOTES: moto's
``LambdaFunction._invoke_lambda`` replaced, no Docker).

moto 5.2.5 implements CodeDeploy ``GetDeployment`` but not
``PutLifecycleEventHookExecutionStatus`` (its server answers NotImplementedError / HTTP 500).
That call is checked with botocore's ``Stubber`` on the hook's CodeDeploy client. A Stubber
answers every call of the client it is attached to, so the ``GetDeployment`` answer it replays
is the one moto gave for the deployment created here.
"""

from __future__ import annotations

import importlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import boto3
import psycopg
import pytest
import urllib3
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.client import BaseClient
from botocore.stub import Stubber
from moto.awslambda import models as lambda_models

from tests.fixtures import FakeLambdaContext, reset_function_caches

HOOK_EXECUTION_ID = "hook-execution-0001"
ALIAS = "live"
# Environment the traffic-serving handlers read; the DB host is a closed loopback port, so
# even an accidental connection attempt could not reach a database.
SERVICE_ENV = {
    "ORDERS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
    "INTAKE_DLQ_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-dlq",
    "STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:saga",
    "DB_HOST": "127.0.0.1",
    "DB_PORT": "1",
    "DB_NAME": "orders",
    "DB_USER": "orders_app",
    "DB_SSLROOTCERT": "amazon-root-cas.pem",  # the shipped bundle, as the template says
    "PAYMENT_API_URL": "http://127.0.0.1:1",
    "PAYMENT_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:key",
}
HANDLERS = {
    "api": "orders_saga.handlers.api",
    "intake": "orders_saga.handlers.intake",
    "reserve_inventory": "orders_saga.handlers.reserve_inventory",
    "take_payment": "orders_saga.handlers.take_payment",
    "confirm_order": "orders_saga.handlers.confirm_order",
    "refund_payment": "orders_saga.handlers.refund_payment",
    "release_inventory": "orders_saga.handlers.release_inventory",
    "mark_order_failed": "orders_saga.handlers.mark_order_failed",
}
PAYMENT_HANDLERS = {"take_payment", "refund_payment"}


# -- moto: a Lambda function with two versions, a deployment naming them --------------------


def _run_in_process(fn: Any, event: Any = None) -> tuple[str, bool, str]:
    """moto's invoke, answered by the function's real handler in this process."""
    payload = json.loads(event) if isinstance(event, (str, bytes)) else event
    module_name, _, attribute = str(fn.handler).rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except ModuleNotFoundError as error:  # what Lambda reports for a broken package (F16)
        error_body = {"errorType": "Runtime.ImportModuleError", "errorMessage": str(error)}
        return json.dumps(error_body), True, ""
    try:
        result = handler(payload, FakeLambdaContext(function_name=fn.function_name))
    except Exception as error:
        return json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}), True, ""
    return json.dumps(result), False, ""


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    function_name: str
    current_version: str
    target_version: str


@dataclass
class HookWorld:
    create: Callable[..., Deployment]
    invokes: list[dict[str, Any]]  # Lambda Invoke parameters the hook sent


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("placeholder.py", "")  # the code runs in-process, not from here
    return buffer.getvalue()


def app_spec(function_name: str, current: str, target: str) -> str:
    """A Lambda AppSpec as CloudFormation's CodeDeployLambdaAliasUpdate writes it."""
    return json.dumps(
        {
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
    )


@pytest.fixture
def hook_world(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HookWorld]:
    urllib3.request("POST", f"{moto_server}/moto-api/reset")
    for name, value in SERVICE_ENV.items():
        monkeypatch.setenv(name, value)
    reset_function_caches()
    monkeypatch.setattr(lambda_models.LambdaFunction, "_invoke_lambda", _run_in_process)
    role = boto3.client("iam").create_role(RoleName="lambda", AssumeRolePolicyDocument="{}")[
        "Role"
    ]["Arn"]
    lam = boto3.client("lambda")
    codedeploy = boto3.client("codedeploy")
    codedeploy.create_application(applicationName="deploy-app", computePlatform="Lambda")
    codedeploy.create_deployment_group(
        applicationName="deploy-app",
        deploymentGroupName="group",
        serviceRoleArn=role,
        deploymentConfigName="CodeDeployDefault.LambdaAllAtOnce",
        deploymentStyle={
            "deploymentType": "BLUE_GREEN",
            "deploymentOption": "WITH_TRAFFIC_CONTROL",
        },
    )

    def create(function_name: str, handler: str, *, content: str | None = None) -> Deployment:
        lam.create_function(
            FunctionName=function_name,
            Runtime="python3.13",
            Role=role,
            Handler=handler,
            Code={"ZipFile": _zip()},
        )
        current = lam.publish_version(FunctionName=function_name)["Version"]
        lam.create_alias(FunctionName=function_name, Name=ALIAS, FunctionVersion=current)
        lam.update_function_configuration(FunctionName=function_name, Description="new")
        target = lam.publish_version(FunctionName=function_name)["Version"]
        assert current != target
        deployment_id = codedeploy.create_deployment(
            applicationName="deploy-app",
            deploymentGroupName="group",
            revision={
                "revisionType": "AppSpecContent",
                "appSpecContent": {"content": content or app_spec(function_name, current, target)},
            },
        )["deploymentId"]
        return Deployment(deployment_id, function_name, current, target)

    # Record what the hook asks Lambda for (read-only: the call still goes to moto).
    from orders_saga import aws_clients

    invokes: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        invokes.append(dict(params))

    client = aws_clients.lambda_()
    client.meta.events.register("provide-client-params.lambda.Invoke", record)
    try:
        yield HookWorld(create=create, invokes=invokes)
    finally:
        client.meta.events.unregister("provide-client-params.lambda.Invoke", record)
        reset_function_caches()


@pytest.fixture
def codedeploy_stub() -> Iterator[Stubber]:
    """Stubber on the hook's CodeDeploy client (see the module docstring for why)."""
    from orders_saga import aws_clients

    with Stubber(aws_clients.codedeploy()) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def moto_get_deployment(deployment: Deployment) -> dict[str, Any]:
    """moto's real GetDeployment answer, replayed through the Stubber."""
    answer = boto3.client("codedeploy").get_deployment(deploymentId=deployment.deployment_id)
    return {key: value for key, value in answer.items() if key != "ResponseMetadata"}


def expect_hook_calls(stubber: Stubber, deployment: Deployment, status: str) -> None:
    stubber.add_response(
        "get_deployment",
        moto_get_deployment(deployment),
        {"deploymentId": deployment.deployment_id},
    )
    stubber.add_response(
        "put_lifecycle_event_hook_execution_status",
        {"lifecycleEventHookExecutionId": HOOK_EXECUTION_ID},
        {
            "deploymentId": deployment.deployment_id,
            "lifecycleEventHookExecutionId": HOOK_EXECUTION_ID,
            "status": status,
        },
    )


def run_hook(deployment: Deployment, context: LambdaContext) -> dict[str, Any]:
    from orders_saga.handlers import pre_traffic_hook

    result: dict[str, Any] = pre_traffic_hook.handler(
        {
            "DeploymentId": deployment.deployment_id,
            "LifecycleEventHookExecutionId": HOOK_EXECUTION_ID,
        },
        context,
    )
    return result


# -- the hook ------------------------------------------------------------------------------


def test_healthy_new_version_is_reported_succeeded(
    hook_world: HookWorld, codedeploy_stub: Stubber, lambda_context: LambdaContext
) -> None:
    # Given a deployment of the Api function from version 1 to version 2
    deployment = hook_world.create("orders-api", "orders_saga.handlers.api.handler")
    expect_hook_calls(codedeploy_stub, deployment, "Succeeded")

    # When CodeDeploy runs the hook
    result = run_hook(deployment, lambda_context)

    # Then the NEW version (not the alias) got exactly the health-check event, and it passed
    assert hook_world.invokes == [
        {
            "FunctionName": "orders-api",
            "Qualifier": deployment.target_version,
            "InvocationType": "RequestResponse",
            "Payload": b'{"orders_saga_health_check": true}',
        }
    ]
    assert result["status"] == "Succeeded"
    assert result["target"] == f"orders-api:{deployment.target_version}"


def test_version_that_cannot_import_is_reported_failed(
    hook_world: HookWorld, codedeploy_stub: Stubber, lambda_context: LambdaContext
) -> None:
    # Given a new version whose handler module does not exist in its package (F16)
    deployment = hook_world.create("orders-broken", "orders_saga.handlers.missing.handler")
    expect_hook_calls(codedeploy_stub, deployment, "Failed")

    result = run_hook(deployment, lambda_context)

    # Then it is invoked, fails, and CodeDeploy is told Failed (it never gets traffic)
    assert [i["Qualifier"] for i in hook_world.invokes] == [deployment.target_version]
    assert result["status"] == "Failed"
    assert "Runtime.ImportModuleError" in result["reason"]


def test_version_missing_its_configuration_is_reported_failed(
    hook_world: HookWorld,
    codedeploy_stub: Stubber,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a new Intake version deployed without its state machine ARN
    monkeypatch.delenv("STATE_MACHINE_ARN")
    deployment = hook_world.create("orders-intake", "orders_saga.handlers.intake.handler")
    expect_hook_calls(codedeploy_stub, deployment, "Failed")

    result = run_hook(deployment, lambda_context)

    # Then its health check answers unhealthy and the hook fails the deployment
    assert result["status"] == "Failed"
    assert "STATE_MACHINE_ARN" in result["reason"]


def test_deployment_without_a_lambda_target_is_reported_failed(
    hook_world: HookWorld, codedeploy_stub: Stubber, lambda_context: LambdaContext
) -> None:
    deployment = hook_world.create(
        "orders-api", "orders_saga.handlers.api.handler", content='{"version": 0.0}'
    )
    expect_hook_calls(codedeploy_stub, deployment, "Failed")

    result = run_hook(deployment, lambda_context)

    assert hook_world.invokes == []  # nothing to invoke: fail closed
    assert result["status"] == "Failed"
    assert "InvalidAppSpec" in result["reason"]


def test_a_status_that_cannot_be_reported_is_raised_not_swallowed(
    hook_world: HookWorld, codedeploy_stub: Stubber, lambda_context: LambdaContext
) -> None:
    deployment = hook_world.create("orders-api", "orders_saga.handlers.api.handler")
    codedeploy_stub.add_response("get_deployment", moto_get_deployment(deployment))
    codedeploy_stub.add_client_error(
        "put_lifecycle_event_hook_execution_status", service_error_code="ThrottlingException"
    )

    with pytest.raises(Exception, match="ThrottlingException"):
        run_hook(deployment, lambda_context)


def test_an_event_without_the_hook_ids_is_rejected(lambda_context: LambdaContext) -> None:
    from orders_saga.handlers import pre_traffic_hook
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        pre_traffic_hook.handler({"DeploymentId": "d-1"}, lambda_context)


# -- reading the AppSpec and the answer ----------------------------------------------------


def test_app_spec_is_read_from_either_revision_type_and_format() -> None:
    from orders_saga.logic.pre_traffic_check import app_spec_content, lambda_target

    as_json = app_spec("orders-api", "7", "8")
    as_yaml = (
        "version: 0.0\nResources:\n  - Target:\n      Type: AWS::Lambda::Function\n"
        "      Properties:\n        Name: orders-api\n        Alias: live\n"
        '        CurrentVersion: "7"\n        TargetVersion: "8"\n'
    )
    for revision in (
        {"revisionType": "AppSpecContent", "appSpecContent": {"content": as_json}},
        {"revisionType": "String", "string": {"content": as_yaml}},
    ):
        target = lambda_target(app_spec_content(revision))
        assert (target.function_name, target.alias) == ("orders-api", "live")
        assert (target.current_version, target.target_version) == ("7", "8")


@pytest.mark.parametrize(
    ("function_error", "payload"),
    [
        ("Unhandled", b'{"errorType": "KeyError"}'),
        (None, b"not json"),
        (None, b'{"healthy": "yes"}'),
        (None, b'{"healthy": false, "problems": ["DB_HOST"]}'),
        (None, b"null"),
    ],
)
def test_only_a_clean_healthy_answer_succeeds(function_error: str | None, payload: bytes) -> None:
    from orders_saga.logic.pre_traffic_check import HookStatus, InvokeOutcome, LambdaTarget, verdict

    target = LambdaTarget.model_validate(
        {"Name": "f", "Alias": "live", "CurrentVersion": "1", "TargetVersion": "2"}
    )
    assert verdict(target, InvokeOutcome(function_error, payload)).status is HookStatus.FAILED
    healthy = InvokeOutcome(None, b'{"healthy": true, "function": "api"}')
    assert verdict(target, healthy).status is HookStatus.SUCCEEDED


def test_only_the_exact_marker_takes_the_health_check_branch() -> None:
    from orders_saga.logic.health_check import is_health_check

    assert is_health_check({"orders_saga_health_check": True})
    lookalikes: list[object] = [
        {"orders_saga_health_check": "true"},
        {"orders_saga_health_check": 1},
        {},
        [],
    ]
    for event in lookalikes:
        assert not is_health_check(event)


# -- the handlers' health-check branch -----------------------------------------------------


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every AWS API call, database connection and HTTP request fails the test if attempted."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise AssertionError(f"the health check must not call {what}")

        return refused

    monkeypatch.setattr(BaseClient, "_make_api_call", refuse("an AWS API"))
    monkeypatch.setattr(psycopg, "connect", refuse("PostgreSQL"))
    monkeypatch.setattr(urllib3.PoolManager, "urlopen", refuse("HTTP"))
    reset_function_caches()
    yield attempts
    reset_function_caches()


def health_check(name: str, context: LambdaContext) -> dict[str, Any]:
    module = importlib.import_module(HANDLERS[name])
    return cast("Callable[..., dict[str, Any]]", module.handler)(
        {"orders_saga_health_check": True}, context
    )


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_health_check_branch_is_healthy_without_touching_anything(
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    no_side_effects: list[str],
    lambda_context: LambdaContext,
) -> None:
    for variable, value in SERVICE_ENV.items():
        monkeypatch.setenv(variable, value)

    assert health_check(name, lambda_context) == {"healthy": True, "function": name}
    assert no_side_effects == []


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_health_check_branch_reports_missing_database_settings(
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    no_side_effects: list[str],
    lambda_context: LambdaContext,
) -> None:
    # Given no database environment at all (a version deployed without its DB settings)
    for variable, value in SERVICE_ENV.items():
        monkeypatch.setenv(variable, value)
    for variable in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER"):
        monkeypatch.delenv(variable)

    report = health_check(name, lambda_context)

    # Then it says so instead of connecting anywhere, and the hook will fail the deploy
    assert report["healthy"] is False
    assert any("DB_HOST" in problem for problem in report["problems"])
    assert no_side_effects == []


@pytest.mark.parametrize(
    ("name", "bundle"),
    [(name, bundle) for name in sorted(HANDLERS) for bundle in (None, "system", "gone.pem")],
)
def test_health_check_branch_reports_a_ca_bundle_the_asset_does_not_ship(
    name: str,
    bundle: str | None,
    monkeypatch: pytest.MonkeyPatch,
    no_side_effects: list[str],
    lambda_context: LambdaContext,
) -> None:
    """Issue 10, finding 2: with no usable CA bundle every connection to RDS Proxy fails TLS
    verification (Lambda has no store psycopg's OpenSSL finds, "system" included). The new
    version must fail its pre-traffic check instead of taking traffic.

    Fails if: database_settings() accepts verify-full without DB_SSLROOTCERT, accepts "system",
    or does not check that the named bundle exists (orders_saga/config.py ca_bundle_path)."""
    for variable, value in SERVICE_ENV.items():
        monkeypatch.setenv(variable, value)
    if bundle is None:
        monkeypatch.delenv("DB_SSLROOTCERT")
    else:
        monkeypatch.setenv("DB_SSLROOTCERT", bundle)

    report = health_check(name, lambda_context)

    assert report["healthy"] is False
    assert any("DB_SSLROOTCERT" in problem for problem in report["problems"]), report
    assert no_side_effects == []


@pytest.mark.parametrize("name", sorted(PAYMENT_HANDLERS))
def test_payment_steps_health_check_includes_the_provider_settings(
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    no_side_effects: list[str],
    lambda_context: LambdaContext,
) -> None:
    for variable, value in SERVICE_ENV.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("PAYMENT_API_URL")

    report = health_check(name, lambda_context)

    assert report["healthy"] is False
    assert any("PAYMENT_API_URL" in problem for problem in report["problems"])
    assert no_side_effects == []
