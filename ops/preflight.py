"""``orders-ops preflight``: read-only checks of an account and region before ``cdk deploy``.

Each check answers one way a first deploy fails or comes up useless in a fresh account
(issue 10, findings 4 and 7): an old CDK bootstrap, no API Gateway CloudWatch role, too little
unreserved Lambda concurrency, the payment key never set, alarms that page nobody, example.com
placeholders. Nothing here writes: the FAIL lines print the commands that fix the account,
for a person to run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from infra.service import this_service
from ops.aws import AwsClients, error_code
from ops.errors import EXIT_OK, EXIT_PROBLEM, UsageError
from ops.output import Report

if TYPE_CHECKING:
    from infra.config import StageConfig

Status = Literal["ok", "FAIL", "note"]

# Lambda refuses a reservation that leaves fewer unreserved executions than this
# ("decreases account's UnreservedConcurrentExecution below its minimum value of [100]").
LAMBDA_MIN_UNRESERVED: Final = 100
# Service Quotas code of Lambda "Concurrent executions" (per account and region).
CONCURRENCY_QUOTA_CODE: Final = "L-B99A9384"
APIGATEWAY_LOGS_POLICY: Final = (
    "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
)
APIGATEWAY_LOGS_ROLE: Final = "apigateway-cloudwatch-logs"
# infra/stack.py: secretsmanager.Secret(self, "PaymentApiKey", ...) at the stack's top level,
# so its logical id is this prefix plus CDK's hash.
PAYMENT_KEY_CONSTRUCT_ID: Final = "PaymentApiKey"
# RFC 2606 names: documentation placeholders that never reach a real service.
PLACEHOLDER_DOMAINS: Final = ("example.com", "example.net", "example.org")
# Where `make synth-dev` and `make synth` write the templates (Makefile).
TEMPLATE_DIRS: Final = ("cdk.out", "cdk.out.prod")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    action: str | None = None


def stack_name(stage: str) -> str:
    return this_service().stack(stage)


# -- 1. CDK bootstrap -------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapRequirement:
    parameter: str  # the SSM parameter the template reads the bootstrap version from
    min_version: int


def default_template(stage: str, root: Path = Path()) -> Path:
    """The synthesized template of ``stage`` in the first output directory that has it."""
    name = f"{stack_name(stage)}.template.json"
    for directory in TEMPLATE_DIRS:
        candidate = root / directory / name
        if candidate.is_file():
            return candidate
    return root / TEMPLATE_DIRS[0] / name


def bootstrap_requirement(template: Mapping[str, Any]) -> BootstrapRequirement:
    """The minimum bootstrap version the assembly asserts in its CheckBootstrapVersion rule.

    CDK writes the rule as "the version is not one of 1..N-1"; the minimum is N.
    """
    try:
        parameter = str(template["Parameters"]["BootstrapVersion"]["Default"])
        assertion = template["Rules"]["CheckBootstrapVersion"]["Assertions"][0]["Assert"]
        refused = assertion["Fn::Not"][0]["Fn::Contains"][0]
        return BootstrapRequirement(parameter, max(int(version) for version in refused) + 1)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise UsageError(
            f"the template has no CheckBootstrapVersion rule CDK would write ({error!r})"
        ) from None


def load_template(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(
            f"no synthesized template at {path}: run `make synth` first, or pass --template"
        )
    template: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return template


def check_bootstrap(
    ssm: Any, requirement: BootstrapRequirement, environment: str = "ACCOUNT/REGION"
) -> Check:
    fix = f"npx cdk bootstrap aws://{environment} (the CDK CLI of package.json)"
    try:
        value = ssm.get_parameter(Name=requirement.parameter)["Parameter"]["Value"]
    except ClientError as error:
        if error_code(error) != "ParameterNotFound":
            raise
        return Check(
            "cdk-bootstrap",
            "FAIL",
            f"{requirement.parameter} not found: the environment is not bootstrapped",
            fix,
        )
    version = int(value)
    if version < requirement.min_version:
        return Check(
            "cdk-bootstrap",
            "FAIL",
            f"bootstrap version {version}, the templates need >= {requirement.min_version}",
            fix,
        )
    return Check(
        "cdk-bootstrap", "ok", f"version {version} (>= {requirement.min_version} required)"
    )


# -- 2. API Gateway account CloudWatch role (finding 4) ---------------------------------------


def apigateway_role_commands(account: str) -> str:
    """The one-time, per-region set-up the stack leaves to the account (cloud_watch_role=False:
    the setting is account-wide, and a stack owning it would fight every other stack)."""
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "apigateway.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
        separators=(",", ":"),
    )
    role_arn = f"arn:aws:iam::{account}:role/{APIGATEWAY_LOGS_ROLE}"
    return "\n".join(
        [
            f"aws iam create-role --role-name {APIGATEWAY_LOGS_ROLE} "
            f"--assume-role-policy-document '{trust}'",
            f"aws iam attach-role-policy --role-name {APIGATEWAY_LOGS_ROLE} "
            f"--policy-arn {APIGATEWAY_LOGS_POLICY}",
            "aws apigateway update-account --patch-operations "
            f"op=replace,path=/cloudwatchRoleArn,value={role_arn}",
        ]
    )


def check_apigateway_role(apigateway: Any, iam: Any, account: str) -> Check:
    role_arn = apigateway.get_account().get("cloudwatchRoleArn")
    if not role_arn:
        return Check(
            "apigateway-cloudwatch-role",
            "FAIL",
            "API Gateway has no CloudWatch Logs role in this region: the stage's access "
            "logging fails the deploy ('CloudWatch Logs role ARN must be set in account "
            "settings')",
            apigateway_role_commands(account),
        )
    role_name = role_arn.rsplit("/", 1)[-1]
    try:
        iam.get_role(RoleName=role_name)
    except ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
        return Check(
            "apigateway-cloudwatch-role",
            "FAIL",
            f"API Gateway's CloudWatch Logs role {role_arn} does not exist",
            apigateway_role_commands(account),
        )
    return Check("apigateway-cloudwatch-role", "ok", role_arn)


# -- 3. Reserved concurrency headroom (finding 7) ---------------------------------------------


def _stack_resources(cloudformation: Any, stack: str) -> list[dict[str, Any]] | None:
    """The stack's resources, or None when the stack does not exist (a first deploy)."""
    resources: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"StackName": stack}
        if token:
            kwargs["NextToken"] = token
        try:
            page = cloudformation.list_stack_resources(**kwargs)
        except ClientError as error:
            if error_code(error) == "ValidationError" and "does not exist" in str(error):
                return None
            raise
        resources.extend(page.get("StackResourceSummaries", []))
        token = page.get("NextToken")
        if not token:
            return resources


def _existing_reservations(lambda_: Any, resources: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for resource in resources:
        if resource.get("ResourceType") != "AWS::Lambda::Function":
            continue
        answer = lambda_.get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
        total += int(answer.get("ReservedConcurrentExecutions", 0))
    return total


def check_concurrency(
    lambda_: Any, config: StageConfig, resources: list[dict[str, Any]] | None
) -> Check:
    needed = sum(settings.reserved_concurrency for settings in config.functions.values())
    account = lambda_.get_account_settings()["AccountLimit"]
    limit = int(account["ConcurrentExecutions"])
    unreserved = int(account["UnreservedConcurrentExecutions"])
    if resources is None:
        existing, basis = 0, "first deploy"
    else:
        # An update replaces the stack's own reservations: they come back to the pool first.
        existing = _existing_reservations(lambda_, resources)
        basis = f"update: the stack already reserves {existing}"
    left = unreserved + existing - needed
    numbers = (
        f"{config.name} reserves {needed}; account limit {limit}, unreserved now {unreserved} "
        f"({basis}); {left} would stay unreserved, Lambda requires >= {LAMBDA_MIN_UNRESERVED}"
    )
    if left >= LAMBDA_MIN_UNRESERVED:
        return Check("lambda-concurrency", "ok", numbers)
    desired = limit + (LAMBDA_MIN_UNRESERVED - left)
    return Check(
        "lambda-concurrency",
        "FAIL",
        numbers,
        "raise the Lambda 'Concurrent executions' quota, then wait for the request to be "
        "granted:\naws service-quotas request-service-quota-increase --service-code lambda "
        f"--quota-code {CONCURRENCY_QUOTA_CODE} --desired-value {max(desired, 1000)}\n"
        "or lower reserved_concurrency in infra/config.py (mind the F06 connection budget)",
    )


# -- 4. The payment provider API key ----------------------------------------------------------


def check_payment_secret(secretsmanager: Any, resources: list[dict[str, Any]] | None) -> Check:
    """The stack creates the secret with a generated random value (infra/stack.py); the
    operator replaces it with the provider's key after the first deploy.

    So before a first deploy there is nothing to check (a note, not a failure). After it, a
    secret with only its creation version still holds the generated value: every payment
    fails authentication. The value itself is never read: describe-secret is enough and
    keeps this command free of secretsmanager:GetSecretValue.
    """
    if resources is None:
        return Check(
            "payment-api-key",
            "note",
            "first deploy: the stack creates the secret with a random value; payments fail "
            "until it holds the provider's key",
            "after the deploy, run preflight again: it names the secret to set",
        )
    arns = [
        resource["PhysicalResourceId"]
        for resource in resources
        if resource.get("ResourceType") == "AWS::SecretsManager::Secret"
        and str(resource.get("LogicalResourceId", "")).startswith(PAYMENT_KEY_CONSTRUCT_ID)
    ]
    if len(arns) != 1:
        return Check(
            "payment-api-key",
            "FAIL",
            f"expected one {PAYMENT_KEY_CONSTRUCT_ID}* secret in the stack, found {len(arns)}",
            "check the stack's resources against infra/stack.py",
        )
    set_value = (
        f"aws secretsmanager put-secret-value --secret-id {arns[0]} "
        "--secret-string file://payment-api-key.txt"
    )
    try:
        secret = secretsmanager.describe_secret(SecretId=arns[0])
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
        return Check("payment-api-key", "FAIL", f"{arns[0]} does not exist", set_value)
    if len(secret.get("VersionIdsToStages", {})) < 2:
        return Check(
            "payment-api-key",
            "FAIL",
            f"{arns[0]} still holds the value generated at creation",
            set_value,
        )
    return Check("payment-api-key", "ok", f"{arns[0]} was set after creation")


# -- 5./6. Placeholders in service.yml -------------------------------------------------------


def is_placeholder_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == domain or host.endswith(f".{domain}") for domain in PLACEHOLDER_DOMAINS)


def check_alarm_emails(config: StageConfig) -> Check:
    fix = f"set {config.name}_alarm_email in service.yml (who is paged)"
    if not config.alarm_emails:
        return Check("alarm-emails", "FAIL", "no alarm e-mail: alarms page nobody", fix)
    placeholders = [
        email for email in config.alarm_emails if is_placeholder_host(email.rpartition("@")[2])
    ]
    if placeholders:
        return Check(
            "alarm-emails", "FAIL", f"placeholder address(es): {', '.join(placeholders)}", fix
        )
    return Check("alarm-emails", "ok", ", ".join(config.alarm_emails))


def check_payment_url(config: StageConfig) -> Check:
    url = config.payment.api_url
    host = urlsplit(url).hostname or ""
    if urlsplit(url).scheme != "https" or is_placeholder_host(host):
        return Check(
            "payment-api-url",
            "FAIL",
            f"{url} is a placeholder: every payment would fail",
            f"set {config.name}_payment_api_url in service.yml (the provider's HTTPS endpoint)",
        )
    return Check("payment-api-url", "ok", url)


# -- The command ------------------------------------------------------------------------------


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check the caller may not be allowed to make fails alone, not the whole report."""
    try:
        return check()
    except ClientError as error:
        return Check(name, "FAIL", f"AWS {error_code(error)}: {error}", "check the permissions")


def run_checks(
    clients: AwsClients, config: StageConfig, template: Mapping[str, Any], stack: str
) -> Iterator[Check]:
    requirement = bootstrap_requirement(template)
    account = clients.sts.get_caller_identity()["Account"]
    environment = f"{account}/{clients.region or 'REGION'}"
    yield _guarded("cdk-bootstrap", lambda: check_bootstrap(clients.ssm, requirement, environment))
    yield _guarded(
        "apigateway-cloudwatch-role",
        lambda: check_apigateway_role(clients.apigateway, clients.iam, account),
    )
    resources = _stack_resources(clients.cloudformation, stack)
    yield _guarded(
        "lambda-concurrency", lambda: check_concurrency(clients.lambda_, config, resources)
    )
    yield _guarded(
        "payment-api-key", lambda: check_payment_secret(clients.secretsmanager, resources)
    )
    yield check_alarm_emails(config)
    yield check_payment_url(config)


def preflight(
    clients: AwsClients,
    stage: str,
    *,
    template_path: Path | None = None,
    stack: str | None = None,
) -> Report:
    # Imported here: infra.config loads the CDK (seconds); the other commands do not need it.
    from infra.config import ConfigError, stage_config  # noqa: PLC0415

    try:
        config = stage_config(stage)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    template = load_template(template_path or default_template(stage))
    stack = stack or stack_name(stage)
    checks = list(run_checks(clients, config, template, stack))
    failed = [check.name for check in checks if check.status == "FAIL"]
    lines = [f"preflight {stack} in {clients.region or 'the default region'}"]
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name}: {check.detail}")
        if check.action and check.status != "ok":
            lines.extend(f"        {line}" for line in check.action.splitlines())
    lines.append(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    data = {
        "stage": stage,
        "stack": stack,
        "region": clients.region,
        "checks": [asdict(check) for check in checks],
        "failed": failed,
    }
    return Report(data, "\n".join(lines), EXIT_PROBLEM if failed else EXIT_OK)
