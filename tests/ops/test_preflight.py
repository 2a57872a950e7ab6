"""``orders-ops preflight`` (issue 10, findings 4 and 7): one pass and one fail per check on
the suite's moto server, and the CLI wiring (exit codes, ``--json``).

moto 5.2.5 answers SSM, API Gateway GetAccount/UpdateAccount, IAM, STS, Secrets Manager,
CloudFormation and Lambda GetFunctionConcurrency. It does not implement Lambda
GetAccountSettings ("Not yet implemented"): that one call comes from a botocore Stubber, as
does ListStackResources where a test needs a deployed stack without deploying one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import urllib3
from botocore.stub import Stubber

import infra.config
from infra.config import STAGES, StageConfig
from infra.service import this_service
from ops import preflight
from ops.aws import AwsClients
from ops.cli import main
from ops.preflight import (
    BootstrapRequirement,
    bootstrap_requirement,
    check_alarm_emails,
    check_apigateway_role,
    check_bootstrap,
    check_concurrency,
    check_payment_secret,
    check_payment_url,
)
from tests.ops.conftest import REGION, CliResult, create_lambda_function
from tests.runbooks.test_runbooks import Command, check_aws

DEV_TEMPLATE = this_service().template_path("dev")
BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
ACCOUNT = "123456789012"  # moto's default account
PROD = STAGES["prod"]
# prod with its placeholders replaced, as an operator would leave service.yml.
CONFIGURED_PROD = dataclasses.replace(
    PROD,
    alarm_emails=("orders-oncall@shop.acme.io",),
    payment=dataclasses.replace(PROD.payment, api_url="https://api.payments-provider.io"),
)


@pytest.fixture
def clients(moto_server: str) -> Iterator[AwsClients]:
    """Clients on an empty moto account: the state of a fresh AWS account."""
    urllib3.request("POST", f"{moto_server}/moto-api/reset")
    yield AwsClients(region=REGION)
    urllib3.request("POST", f"{moto_server}/moto-api/reset")


def stub_operation(
    monkeypatch: pytest.MonkeyPatch,
    real_client: Any,
    service: str,
    operation: str,
    response: dict[str, Any],
) -> Stubber:
    """Answer one operation from a Stubber (asserting it is called once); the rest stays on moto."""
    stubbed = boto3.client(service, region_name=REGION)  # type: ignore[call-overload]
    stubber = Stubber(stubbed)
    stubber.add_response(operation, response)
    stubber.activate()
    monkeypatch.setattr(real_client, operation, getattr(stubbed, operation))
    return stubber


def account_settings(limit: int, unreserved: int) -> dict[str, Any]:
    return {
        "AccountLimit": {
            "ConcurrentExecutions": limit,
            "UnreservedConcurrentExecutions": unreserved,
        }
    }


def put_bootstrap_version(version: int) -> None:
    boto3.client("ssm").put_parameter(Name=BOOTSTRAP_PARAMETER, Value=str(version), Type="String")


def set_apigateway_role(*, create_role: bool) -> str:
    role_name = "apigateway-cloudwatch-logs"
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/{role_name}"
    if create_role:
        role_arn = boto3.client("iam").create_role(
            RoleName=role_name, AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
    boto3.client("apigateway").update_account(
        patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role_arn}]
    )
    return role_arn


def create_function(name: str, reserved: int) -> str:
    create_lambda_function(name)
    boto3.client("lambda").put_function_concurrency(
        FunctionName=name, ReservedConcurrentExecutions=reserved
    )
    return name


def stage_reservations(config: StageConfig) -> int:
    return sum(settings.reserved_concurrency for settings in config.functions.values())


# -- 1. CDK bootstrap --------------------------------------------------------------------------


def test_bootstrap_minimum_is_read_from_the_synthesized_rule() -> None:
    # Given the template `make synth-dev` wrote
    template = json.loads(DEV_TEMPLATE.read_text(encoding="utf-8"))
    rule = template["Rules"]["CheckBootstrapVersion"]["Assertions"][0]

    # When
    requirement = bootstrap_requirement(template)

    # Then the minimum is the one CDK's own message names
    assert requirement.parameter == BOOTSTRAP_PARAMETER
    assert f"version {requirement.min_version} required" in rule["AssertDescription"]


def test_bootstrap_recent_enough_passes(clients: AwsClients) -> None:
    put_bootstrap_version(30)
    check = check_bootstrap(clients.ssm, BootstrapRequirement(BOOTSTRAP_PARAMETER, 6))
    assert check.status == "ok", check


def test_bootstrap_older_than_required_fails(clients: AwsClients) -> None:
    put_bootstrap_version(5)
    check = check_bootstrap(clients.ssm, BootstrapRequirement(BOOTSTRAP_PARAMETER, 6))
    assert check.status == "FAIL"
    assert "cdk bootstrap" in (check.action or "")


def test_bootstrap_missing_fails(clients: AwsClients) -> None:
    check = check_bootstrap(clients.ssm, BootstrapRequirement(BOOTSTRAP_PARAMETER, 6))
    assert check.status == "FAIL"
    assert "not bootstrapped" in check.detail


# -- 2. API Gateway CloudWatch role (finding 4) ------------------------------------------------


def test_apigateway_role_set_and_present_passes(clients: AwsClients) -> None:
    role_arn = set_apigateway_role(create_role=True)
    check = check_apigateway_role(clients.apigateway, clients.iam, ACCOUNT)
    assert check.status == "ok", check
    assert check.detail == role_arn


def test_F04_fresh_account_without_apigateway_role_fails_with_the_commands(
    clients: AwsClients,
) -> None:
    # Given a fresh account: no CloudWatch role in API Gateway's account settings
    # When
    check = check_apigateway_role(clients.apigateway, clients.iam, ACCOUNT)

    # Then the fix is spelled out: the role, its managed policy, the account setting
    assert check.status == "FAIL"
    action = check.action or ""
    assert "aws iam create-role --role-name apigateway-cloudwatch-logs" in action
    assert '"Service":"apigateway.amazonaws.com"' in action
    assert preflight.APIGATEWAY_LOGS_POLICY in action
    assert (
        "aws apigateway update-account --patch-operations op=replace,path=/cloudwatchRoleArn,"
        f"value=arn:aws:iam::{ACCOUNT}:role/apigateway-cloudwatch-logs"
    ) in action


def test_apigateway_role_that_was_deleted_fails(clients: AwsClients) -> None:
    set_apigateway_role(create_role=False)
    check = check_apigateway_role(clients.apigateway, clients.iam, ACCOUNT)
    assert check.status == "FAIL"
    assert "does not exist" in check.detail


# -- 3. Reserved concurrency (finding 7) -------------------------------------------------------


def test_concurrency_with_headroom_passes(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    needed = stage_reservations(PROD)
    stub_operation(
        monkeypatch,
        clients.lambda_,
        "lambda",
        "get_account_settings",
        account_settings(1000, needed + 100),
    )
    check = check_concurrency(clients.lambda_, PROD, resources=None)
    assert check.status == "ok", check


def test_F07_new_account_quota_too_small_for_prod_fails_with_the_quota_request(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a new account with a 400 quota, all of it unreserved
    stub_operation(
        monkeypatch, clients.lambda_, "lambda", "get_account_settings", account_settings(400, 400)
    )

    # When prod (which reserves 339) is checked for a first deploy
    check = check_concurrency(clients.lambda_, PROD, resources=None)

    # Then it fails, names the numbers and the Service Quotas request
    assert check.status == "FAIL"
    needed = stage_reservations(PROD)
    assert f"prod reserves {needed}" in check.detail
    assert f"{400 - needed} would stay unreserved" in check.detail
    assert "--service-code lambda --quota-code L-B99A9384" in (check.action or "")


def test_concurrency_on_update_counts_the_stacks_own_reservations_back(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given prod deployed: its functions already hold most of the reservation, so the
    # account's unreserved pool is small although the update needs nothing new
    needed = stage_reservations(PROD)
    api = create_function("orders-api", 300)
    intake = create_function("orders-intake", needed - 300)
    resources = [
        {"ResourceType": "AWS::Lambda::Function", "PhysicalResourceId": name}
        for name in (api, intake)
    ]
    stub_operation(
        monkeypatch, clients.lambda_, "lambda", "get_account_settings", account_settings(500, 161)
    )

    # When
    check = check_concurrency(clients.lambda_, PROD, resources=resources)

    # Then the stack's own reservations are counted as available again
    assert check.status == "ok", check
    assert f"the stack already reserves {needed}" in check.detail


# -- 4. The payment key secret -----------------------------------------------------------------


def payment_secret_resources(arn: str) -> list[dict[str, Any]]:
    return [
        {
            "ResourceType": "AWS::SecretsManager::Secret",
            "LogicalResourceId": "PaymentApiKeyC1A2B3D4",
            "PhysicalResourceId": arn,
        }
    ]


def test_payment_key_before_the_first_deploy_is_a_note(clients: AwsClients) -> None:
    check = check_payment_secret(clients.secretsmanager, resources=None)
    assert check.status == "note"


def test_payment_key_replaced_after_deploy_passes(clients: AwsClients) -> None:
    secrets = boto3.client("secretsmanager")
    arn = secrets.create_secret(Name="PaymentApiKey", SecretString="generated")["ARN"]
    secrets.put_secret_value(SecretId=arn, SecretString="sk_live_from_the_provider")
    check = check_payment_secret(clients.secretsmanager, payment_secret_resources(arn))
    assert check.status == "ok", check


def test_payment_key_still_generated_after_deploy_fails(clients: AwsClients) -> None:
    # Given the stack created the secret with its random value and nobody replaced it
    arn = boto3.client("secretsmanager").create_secret(
        Name="PaymentApiKey", SecretString="generated"
    )["ARN"]

    # When
    check = check_payment_secret(clients.secretsmanager, payment_secret_resources(arn))

    # Then
    assert check.status == "FAIL"
    assert f"aws secretsmanager put-secret-value --secret-id {arn}" in (check.action or "")


# -- 5./6. Placeholders in service.yml --------------------------------------------------------


def test_prod_alarm_email_placeholder_fails() -> None:
    check = check_alarm_emails(PROD)
    assert check.status == "FAIL"
    assert PROD.alarm_emails[0] in check.detail
    assert "set prod_alarm_email in service.yml" in (check.action or "")


def test_stage_without_alarm_email_fails() -> None:
    assert check_alarm_emails(STAGES["dev"]).status == "FAIL"


def test_real_alarm_email_passes() -> None:
    assert check_alarm_emails(CONFIGURED_PROD).status == "ok"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_example_payment_url_fails(stage: str) -> None:
    check = check_payment_url(STAGES[stage])
    assert check.status == "FAIL"
    assert "api_url" in (check.action or "")


def test_real_payment_url_passes() -> None:
    assert check_payment_url(CONFIGURED_PROD).status == "ok"


# -- What the FAIL lines tell the operator to run ------------------------------------------


def test_every_aws_command_a_fail_line_prints_is_a_real_operation(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the failing checks that print aws commands (the runbooks' checker judges them)
    stub_operation(
        monkeypatch, clients.lambda_, "lambda", "get_account_settings", account_settings(400, 400)
    )
    arn = boto3.client("secretsmanager").create_secret(Name="key", SecretString="x")["ARN"]
    actions = [
        check_apigateway_role(clients.apigateway, clients.iam, ACCOUNT).action,
        check_concurrency(clients.lambda_, PROD, resources=None).action,
        check_payment_secret(clients.secretsmanager, payment_secret_resources(arn)).action,
    ]

    # When
    lines = [line for action in actions for line in (action or "").splitlines()]
    commands = [
        Command(Path("preflight"), "aws", tuple(shlex.split(line)[1:]), fenced=True)
        for line in lines
        if line.startswith("aws ")
    ]

    # Then
    assert len(commands) == 5
    problems = {str(command): check_aws(command) for command in commands}
    assert not any(problems.values()), problems


def test_default_template_is_where_make_synth_writes_each_stage(tmp_path: Path) -> None:
    for directory, stage in (("cdk.out", "dev"), ("cdk.out.prod", "prod")):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / f"{this_service().stack(stage)}.template.json").write_text("{}")
    assert preflight.default_template("prod", tmp_path) == (
        this_service().template_path("prod", tmp_path)
    )
    assert preflight.default_template("dev", tmp_path) == (
        this_service().template_path("dev", tmp_path)
    )


# -- The command -------------------------------------------------------------------------------


def run_cli(clients: AwsClients, *argv: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), clients=clients, out=out, err=err)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def ready_account(clients: AwsClients, monkeypatch: pytest.MonkeyPatch) -> AwsClients:
    """An account prepared as the README says, and service.yml without placeholders."""
    put_bootstrap_version(30)
    set_apigateway_role(create_role=True)
    stub_operation(
        monkeypatch, clients.lambda_, "lambda", "get_account_settings", account_settings(1000, 1000)
    )
    monkeypatch.setattr(infra.config, "STAGES", {**STAGES, "prod": CONFIGURED_PROD})
    return clients


def test_preflight_on_a_ready_account_exits_0(ready_account: AwsClients) -> None:
    result = run_cli(ready_account, "preflight", "--stage", "prod", "--template", str(DEV_TEMPLATE))
    assert result.code == 0, result.out + result.err
    assert "all checks passed" in result.out
    assert "note  payment-api-key: first deploy" in result.out


def test_preflight_json_lists_every_check_and_the_failures(
    clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a fresh account and prod's placeholders; the stubbed settings leave no headroom
    stub_operation(
        monkeypatch, clients.lambda_, "lambda", "get_account_settings", account_settings(50, 50)
    )

    # When
    result = run_cli(
        clients, "--json", "preflight", "--stage", "prod", "--template", str(DEV_TEMPLATE)
    )

    # Then
    assert result.code == 1
    report = result.json()
    assert [check["name"] for check in report["checks"]] == [
        "cdk-bootstrap",
        "apigateway-cloudwatch-role",
        "lambda-concurrency",
        "payment-api-key",
        "alarm-emails",
        "payment-api-url",
    ]
    assert report["failed"] == [
        "cdk-bootstrap",
        "apigateway-cloudwatch-role",
        "lambda-concurrency",
        "alarm-emails",
        "payment-api-url",
    ]
    assert report["stack"] == this_service().stack("prod")


def test_preflight_without_a_template_exits_2_and_says_synth(
    clients: AwsClients, tmp_path: Path
) -> None:
    result = run_cli(
        clients, "preflight", "--stage", "prod", "--template", str(tmp_path / "none.json")
    )
    assert result.code == 2
    assert "make synth" in result.err


def test_preflight_unknown_stage_exits_2(clients: AwsClients) -> None:
    result = run_cli(clients, "preflight", "--stage", "staging")
    assert result.code == 2
    assert "unknown stage" in result.err
