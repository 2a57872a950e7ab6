"""F20 Permission errors at runtime, or roles broader than needed: least privilege both ways.

Evidence: every AWS call each function makes in the local stack is recorded from inside its
worker (devstack/call_recorder.py: botocore hooks, one line per call with the IAM action and
the resource ARN). Judge: the function's *own* role, read from the session-synthesized dev
template (AWS::IAM::Policy resources attached to the role of the function's ``Role``, inline
and managed policies), resolved to the same local ARNs moto uses, evaluated by
devstack/iam_policy.py (moto's own evaluator is too partial; see there). Two directions:

1. every recorded call is allowed by the caller's role: a missing grant fails;
2. every (action, resource) the role allows is used by one of that function's calls, or has
   its reason in the one table ``infra/permissions.py``: an unused, unjustified grant fails.

The module drives its own evidence (so it does not depend on test order): a confirmed order,
a declined one (all compensations), a retried POST, a poison message, and the pre-traffic hook
once per CodeDeploy deployment group, all through the session's local stack; Migrate ran when
the stack started. It also judges whatever the other tests recorded so far, and a session-end
audit repeats direction 1 over everything recorded in the session, including the e2e tests and
the chaos run (tests/e2e/test_chaos.py records into the same directory).

One local difference is translated back to what deploys: the local run logs in to the local
proxy with a password from a local secret (``devstack.aws.PROXY_LOGIN_SECRET_PREFIX``) instead
of an RDS IAM token (``devstack.aws.local_overrides``). A
function whose template says ``DB_AUTH=iam`` and reads that secret is judged as
``rds-db:connect`` on the proxy's ``dbuser`` ARN for its template ``DB_USER``: what its token is
signed for in AWS. The token path itself is recorded too (``generate_db_auth_token``), tested
in-process below.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from devstack import call_recorder
from devstack.aws import PROXY_LOGIN_SECRET_PREFIX
from devstack.call_recorder import CallRecorder, RecordedCall, Recording, read_recordings
from devstack.iam_policy import Decision, Statement, allow_grants, evaluate, parse_policy
from devstack.lambda_runtime import InvokeResult
from devstack.template import CfnTemplate, Physical, Resolver
from infra.config import FUNCTION_NAMES
from infra.deployments import NOT_CODEDEPLOYED
from infra.permissions import ANY_FUNCTION, NOT_CALLED_BY_HANDLERS, justification
from infra.service import this_service
from tests.catalogue.templates import our_functions
from tests.infra.conftest import Synthesized
from tests.localstack import Running, new_key

HOOK_EXECUTION_PREFIX = "f20-hook"


# --- the roles, from the synthesized template, resolved to local ARNs -------------------------


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def local_resolver(template: CfnTemplate, recording: Recording) -> Resolver:
    """The recording's own physical ids (moto's), plus a deterministic local value for what the
    local stack does not create but policies name (roles, log groups, the proxy, CodeDeploy)."""
    resolver = Resolver(
        template, {lid: Physical(ref, attrs) for lid, (ref, attrs) in recording.physical.items()}
    )
    region, account = template.region, template.account_id
    for res in template.resources():
        lid = res.logical_id
        if lid in resolver.physical:
            continue
        name = template.local_name(lid)
        if res.type == "AWS::IAM::Role":
            resolver.register(lid, name, Arn=f"arn:aws:iam::{account}:role/{name}")
        elif res.type == "AWS::Logs::LogGroup":
            group = res.properties.get("LogGroupName")
            group = group if isinstance(group, str) else f"/aws/lambda/{name}"
            resolver.register(
                lid, group, Arn=f"arn:aws:logs:{region}:{account}:log-group:{group}:*"
            )
        elif res.type == "AWS::RDS::DBProxy":
            resolver.register(
                lid,
                name,
                DBProxyArn=f"arn:aws:rds:{region}:{account}:db-proxy:prx-{_digest(lid, 17)}",
                Endpoint=f"{name.lower()}.proxy-local.{region}.rds.amazonaws.com",
            )
        elif res.type == "AWS::RDS::DBInstance":
            resolver.register(lid, name, DbiResourceId=f"db-{_digest(lid, 26).upper()}")
        elif res.type in {"AWS::CodeDeploy::Application", "AWS::CodeDeploy::DeploymentGroup"}:
            resolver.register(lid, name)
    return resolver


def role_statements(
    template: CfnTemplate, resolver: Resolver, function_lid: str
) -> list[Statement]:
    """Every statement of the function's role: inline, attached AWS::IAM::Policy and
    AWS::IAM::ManagedPolicy resources, managed policy ARNs (which must be in the template)."""
    role_value = template.resource(function_lid).properties["Role"]
    role_lid = template.referenced_id(role_value)
    assert role_lid is not None, f"{function_lid}: its Role must be a role of this stack"
    role_name = resolver.physical[role_lid].ref
    role = template.resource(role_lid)
    statements: list[Statement] = []
    for inline in role.properties.get("Policies", []):
        document = resolver.resolve(inline["PolicyDocument"])
        statements += parse_policy(document, f"{role_lid}/{inline['PolicyName']}")
    for managed in role.properties.get("ManagedPolicyArns", []):
        lid = template.referenced_id(managed)
        unjudgeable = (
            f"{role_lid}: managed policy {managed} has no document in the template, so F20 "
            "cannot judge it; grant with an AWS::IAM::Policy instead"
        )
        assert lid is not None, unjudgeable
        assert template.resource(lid).type == "AWS::IAM::ManagedPolicy", unjudgeable
        document = resolver.resolve(template.resource(lid).properties["PolicyDocument"])
        statements += parse_policy(document, lid)
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in template.resources(kind):
            attached = [resolver.resolve_str(r) for r in policy.properties.get("Roles", [])]
            if role_name in attached:
                document = resolver.resolve(policy.properties["PolicyDocument"])
                statements += parse_policy(document, policy.logical_id)
    return statements


# --- the recorded calls, as the deployed function makes them ----------------------------------


@dataclass(frozen=True)
class Call:
    function: str  # logical name: "Api"
    action: str
    resource: str | None
    recorded: RecordedCall  # as it was made locally


@dataclass(frozen=True)
class Evidence:
    """One recording, judged against the roles resolved for it."""

    recording: Recording
    calls: Mapping[str, list[Call]]  # logical name -> calls
    statements: Mapping[str, list[Statement]]  # logical name -> its role's statements
    event_sources: Mapping[str, frozenset[str]]  # logical name -> ARNs its mappings read


def _proxy_user_arn(resolver: Resolver, proxy_lid: str, user: str) -> str:
    proxy_arn = resolver.physical[proxy_lid].attributes["DBProxyArn"]
    template = resolver.template
    resource_id = proxy_arn.split(":")[6]  # what CDK's grant_connect selects, too
    return f"arn:aws:rds-db:{template.region}:{template.account_id}:dbuser:{resource_id}/{user}"


def _is_proxy_login(secret_arn: str | None) -> bool:
    """The local proxy's login secret (devstack.aws): what an IAM token is in AWS."""
    return secret_arn is not None and f":secret:{PROXY_LOGIN_SECRET_PREFIX}" in secret_arn


def deployed_view(
    call: RecordedCall,
    name: str,
    env: Mapping[str, Any],
    resolver: Resolver,
    local_db_secrets: set[str],
) -> Call:
    template = resolver.template
    if (
        call.action == "secretsmanager:GetSecretValue"
        and (call.resource in local_db_secrets or _is_proxy_login(call.resource))
        and env.get("DB_AUTH") == "iam"
    ):
        proxy = template.referenced_id(env.get("DB_HOST"))
        assert proxy is not None, f"{name}: DB_HOST must name the stack's proxy"
        return Call(name, "rds-db:connect", _proxy_user_arn(resolver, proxy, env["DB_USER"]), call)
    if call.action == "rds-db:connect" and call.resource is None:
        for res in template.resources("AWS::RDS::DBProxy"):
            endpoint = resolver.physical[res.logical_id].attributes["Endpoint"]
            if call.detail.get("db_host") == endpoint:
                user = call.detail["db_user"]
                return Call(
                    name, call.action, _proxy_user_arn(resolver, res.logical_id, user), call
                )
    return Call(name, call.action, call.resource, call)


def judge(recording: Recording, synthesized: Synthesized) -> Evidence:
    template = CfnTemplate(
        synthesized.raw,
        stack_name=recording.stack_name,
        region=recording.region,
        account_id=recording.account_id,
    )
    resolver = local_resolver(template, recording)
    functions = our_functions(synthesized)
    local_db_secrets = {
        resolver.resolve_str(props["Environment"]["Variables"]["DB_SECRET_ARN"])
        for _, props in functions.values()
        if "DB_SECRET_ARN" in props["Environment"]["Variables"]
    }
    calls: dict[str, list[Call]] = {}
    statements: dict[str, list[Statement]] = {}
    for name, (lid, props) in functions.items():
        env = props["Environment"]["Variables"]
        statements[name] = role_statements(template, resolver, lid)
        local_name = recording.physical[lid][0] if lid in recording.physical else None
        calls[name] = [
            deployed_view(call, name, env, resolver, local_db_secrets)
            for call in recording.calls
            if call.function == local_name
        ]
    sources: dict[str, set[str]] = {name: set() for name in functions}
    names = {lid: name for name, (lid, _) in functions.items()}
    for mapping in template.event_source_mappings():
        queue_arn = resolver.physical[mapping.queue_logical_id].attributes["Arn"]
        sources[names[mapping.function_logical_id]].add(queue_arn)
    event_sources = {name: frozenset(arns) for name, arns in sources.items()}
    return Evidence(recording, calls, statements, event_sources)


def denied_calls(evidence: Evidence) -> list[str]:
    """Direction 1: each distinct call its role does not allow, with the decision."""
    found = set()
    for name, calls in evidence.calls.items():
        for call in calls:
            decision = evaluate(evidence.statements[name], call.action, call.resource)
            if decision is not Decision.ALLOWED:
                found.add(f"{name}: {call.action} on {call.resource}: {decision.value}")
    return sorted(found)


def unused_grants(evidences: list[Evidence]) -> list[str]:
    """Direction 2: each grant no call of its function used (over every recording) and that
    infra/permissions.py does not justify; wildcard actions are never acceptable."""
    problems = []
    for name in evidences[0].statements:
        per_recording = [allow_grants(e.statements[name]) for e in evidences]
        assert len({len(g) for g in per_recording}) == 1, "one template, one set of grants"
        for index, grant in enumerate(per_recording[0]):
            if grant.wildcard_action:
                problems.append(f"{name}: wildcard action {grant.action} ({grant.source})")
                continue
            used = any(
                g[index].covers(call.action, call.resource)
                for g, e in zip(per_recording, evidences, strict=True)
                for call in e.calls[name]
            )
            excuse = justification(name, grant.action)
            if excuse is not None and excuse.event_source_only:
                on_own_source = grant.resource in evidences[0].event_sources[name]
                excuse = excuse if on_own_source else None
            if not used and excuse is None:
                problems.append(
                    f"{name}: {grant.action} on {grant.resource} ({grant.source}) is granted "
                    "but never called, and infra/permissions.py gives no reason"
                )
    return problems


def stale_justifications(evidence: Evidence) -> list[str]:
    """Entries of infra/permissions.py that no role grants (any more)."""
    granted = {
        (name, grant.action.lower())
        for name, statements in evidence.statements.items()
        for grant in allow_grants(statements)
    }
    stale = []
    for function, action in NOT_CALLED_BY_HANDLERS:
        holders = {n for n, a in granted if a == action.lower()}
        if not holders or (function != ANY_FUNCTION and function not in holders):
            stale.append(f"{function}: {action}")
    return stale


# --- driving the evidence ---------------------------------------------------------------------


def order(sku: str, payment_method: str = "pm_card_visa") -> dict[str, Any]:
    return {
        "items": [{"sku": sku, "quantity": 1}],
        "payment_method": payment_method,
        "currency": "EUR",
    }


def app_spec(function_name: str, version: str) -> str:
    """The Lambda AppSpec CloudFormation hands CodeDeploy for an alias update."""
    target = {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Name": function_name,
            "Alias": "live",
            "CurrentVersion": version,
            "TargetVersion": version,
        },
    }
    return json.dumps({"version": 0.0, "Resources": [{"Target": target}]})


def deployment_groups(template: CfnTemplate) -> dict[str, str]:
    """Function logical id -> the deployment group that shifts its alias (UpdatePolicy)."""
    groups = {}
    for alias in template.resources("AWS::Lambda::Alias"):
        policy = template.body["Resources"][alias.logical_id].get("UpdatePolicy", {})
        group = template.referenced_id(
            policy.get("CodeDeployLambdaAliasUpdate", {}).get("DeploymentGroupName")
        )
        if group is not None:
            groups[template.function_of(alias.logical_id)] = group
    return groups


def run_pre_traffic_hooks(running: Running) -> dict[str, InvokeResult]:
    """One deployment per group, in the stack's moto, named as ``local_resolver`` names the
    template's CodeDeploy resources; the hook runs in its own worker, recording. Returns
    each deployment id's hook invocation.

    moto 5.2.5 does not implement PutLifecycleEventHookExecutionStatus (HTTP 500, see
    tests/functions/test_pre_traffic_hook.py), so the hook ends in an error after making that
    call: the call is still on record, which is what F20 judges."""
    stack = running.stack
    assert stack.aws is not None
    assert stack.resources is not None
    template = stack.template
    codedeploy = stack.aws.client("codedeploy")
    (app,) = [
        template.local_name(r.logical_id)
        for r in template.resources("AWS::CodeDeploy::Application")
    ]
    with contextlib.suppress(codedeploy.exceptions.ApplicationAlreadyExistsException):
        codedeploy.create_application(applicationName=app, computePlatform="Lambda")
    events = []
    for n, (function_lid, group_lid) in enumerate(sorted(deployment_groups(template).items())):
        group = template.local_name(group_lid)
        with contextlib.suppress(codedeploy.exceptions.DeploymentGroupAlreadyExistsException):
            codedeploy.create_deployment_group(
                applicationName=app,
                deploymentGroupName=group,
                serviceRoleArn=f"arn:aws:iam::{stack.resources.account_id}:role/codedeploy",
            )
        fn = stack.resources.functions[function_lid]
        deployment = codedeploy.create_deployment(
            applicationName=app,
            deploymentGroupName=group,
            revision={
                "revisionType": "AppSpecContent",
                "appSpecContent": {"content": app_spec(fn.name, fn.version)},
            },
        )["deploymentId"]
        events.append(
            {
                "DeploymentId": deployment,
                "LifecycleEventHookExecutionId": f"{HOOK_EXECUTION_PREFIX}-{n}",
            }
        )
    hook = stack.invoker("pre_traffic_hook")
    with ThreadPoolExecutor(max_workers=stack.pool_size) as pool:
        results = list(pool.map(hook.invoke, events))
    return {str(e["DeploymentId"]): r for e, r in zip(events, results, strict=True)}


@dataclass(frozen=True)
class Drive:
    evidence: list[Evidence]  # every recording of the session so far; the driven one included
    driven: Evidence  # the session stack's own recording, which this module drove
    hook_results: Mapping[str, InvokeResult]  # deployment id -> the hook's invocation
    healthy_hook_verdicts: int
    deployment_groups: int


@pytest.fixture(scope="session")
def session_audit(aws_call_log_dir: Path, synthesized: dict[str, Synthesized]) -> Iterator[None]:
    """After the whole session: direction 1 over every call recorded by any test (e2e, chaos)."""
    yield
    evidence = [judge(r, synthesized["dev"]) for r in read_recordings(aws_call_log_dir)]
    denied = [d for e in evidence for d in denied_calls(e)]
    assert not denied, (
        "F20 session audit (test_f20_least_privilege): calls outside their role:\n"
        + "\n".join(denied)
    )


@pytest.fixture(scope="module")
def drive(
    local_stack: Running,
    aws_call_log_dir: Path,
    synthesized: dict[str, Synthesized],
    session_audit: None,
) -> Drive:
    running = local_stack
    running.stack.provider.faults.reset()
    api = running.api
    # Given a confirmed order, a declined one (every compensation), a retried POST ...
    _, confirmed = api.post_order(running.alice, order("SKU-APPLE"), key := new_key())
    api.post_order(running.alice, order("SKU-APPLE"), key)
    _, declined = api.post_order(running.bob, order("SKU-PEAR", "pm_card_declined"), new_key())
    # ... a message the intake must park in its DLQ ...
    running.stack.send_raw_message('{"f20": "not an order"}')
    assert api.wait_terminal(running.alice, confirmed["order_id"])["status"] == "CONFIRMED"
    assert api.wait_terminal(running.bob, declined["order_id"])["status"] == "FAILED"
    assert running.stack.wait_until_settled(timeout_s=90)
    # ... and the pre-traffic hook for every deployment group.
    hook_results = run_pre_traffic_hooks(running)
    verdicts = [
        line
        for line in running.logs.json_lines()
        if line.get("message") == "pre-traffic check"
        and line.get("status") == "Succeeded"
        and line.get("deployment_id") in hook_results
    ]
    assert running.stack.call_log is not None, "the session stack must record (tests/localstack.py)"
    evidence = [judge(r, synthesized["dev"]) for r in read_recordings(aws_call_log_dir)]
    (driven,) = [e for e in evidence if e.recording.directory == running.stack.call_log]
    return Drive(
        evidence=evidence,
        driven=driven,
        hook_results=hook_results,
        healthy_hook_verdicts=len(verdicts),
        deployment_groups=len(deployment_groups(running.stack.template)),
    )


# --- the proofs -------------------------------------------------------------------------------


def test_f20_every_function_was_recorded_making_calls(drive: Drive) -> None:
    """Given the driven orders, poison message, hook runs and Migrate at start-up, when the
    recordings are read, then every function of the stack made AWS calls on record, and the
    hook checked the new version of every deployment group.

    Fails if: a worker stops installing the recorder (devstack/lambda_runtime.py), the session
    stack stops recording (tests/localstack.py), or a function is left out of the drive, which
    would make both directions vacuous for it.
    """
    counts = {name: len(drive.driven.calls[name]) for name in FUNCTION_NAMES}
    assert all(n > 0 for n in counts.values()), counts
    # Every function but the hook itself and those CodeDeploy does not manage (F12).
    assert drive.deployment_groups == len(FUNCTION_NAMES) - 1 - len(NOT_CODEDEPLOYED)
    assert len(drive.hook_results) == drive.deployment_groups
    # each new version answered its health check: the hook got as far as reporting on it
    assert drive.healthy_hook_verdicts == drive.deployment_groups


def test_f20_every_recorded_call_is_allowed_by_the_callers_own_role(drive: Drive) -> None:
    """Given every call each function made (deployed view), when each is evaluated against that
    function's own synthesized role, then every one is allowed.

    Fails if: a grant a handler needs is removed or scoped to the wrong resource in infra/ (a
    `grant_*` dropped, a queue or secret swapped), or a handler starts calling a new API or
    resource without its grant.
    """
    denied = [d for e in drive.evidence for d in denied_calls(e)]
    assert not denied, "\n".join(denied)


def test_f20_every_granted_action_is_used_or_justified(drive: Drive) -> None:
    """Given the same evidence, when every (action, resource) each role allows is matched
    against that function's calls, then each is used, or infra/permissions.py says why not, and
    that table has no stale entry.

    Fails if: a role gains a grant its handler never uses (a broader `grant_*`, a wildcard),
    or the table keeps a reason for a grant that no longer exists.
    """
    unused = unused_grants(drive.evidence)
    assert not unused, "\n".join(unused)
    assert not stale_justifications(drive.driven)


def _without_action(statements: list[Statement], action: str) -> list[Statement]:
    out = []
    for s in statements:
        kept = tuple(a for a in s.actions or () if a.lower() != action.lower())
        if s.actions is None or kept:
            out.append(replace(s, actions=kept) if s.actions is not None else s)
    return out


def _with_extra(statements: list[Statement], action: str, resource: str) -> list[Statement]:
    return [*statements, Statement("Allow", (action,), None, (resource,), None, False, "extra")]


def _edited(
    evidence: Evidence, name: str, edit: Callable[[list[Statement]], list[Statement]]
) -> Evidence:
    return replace(
        evidence, statements={**evidence.statements, name: edit(list(evidence.statements[name]))}
    )


def test_f20_a_role_missing_a_grant_fails_the_evaluation(drive: Drive) -> None:
    """Given the recorded evidence and a copy of Api's role without sqs:SendMessage (and one of
    Intake's without states:StartExecution), when evaluated, then exactly those calls are
    denied: the checker can fail.

    Fails if: the evaluator allows what no statement grants, or the recorder stops seeing the
    Api's publish or the intake's StartExecution.
    """
    evidence = drive.evidence
    edited = [
        _edited(
            _edited(e, "Api", lambda s: _without_action(s, "sqs:SendMessage")),
            "Intake",
            lambda s: _without_action(s, "states:StartExecution"),
        )
        for e in evidence
    ]
    denied = {d.split(" on ")[0] for e in edited for d in denied_calls(e)}
    assert denied == {"Api: sqs:SendMessage", "Intake: states:StartExecution"}


@pytest.mark.parametrize(
    ("function", "extra", "on_resource_of"),
    [
        # an action nobody calls, on a resource the role already names
        ("Api", "dynamodb:Scan", "dynamodb:PutItem"),
        # a justified action (the event source's ReceiveMessage) on a queue that is not the
        # function's event source: the justification must not stretch to it
        ("Intake", "sqs:ReceiveMessage", "sqs:SendMessage"),
    ],
)
def test_f20_an_extra_grant_fails_the_evaluation(
    drive: Drive, function: str, extra: str, on_resource_of: str
) -> None:
    """Given a role plus one grant its function never uses (Api: dynamodb:Scan on the
    idempotency table; Intake: sqs:ReceiveMessage on its DLQ), when the grants are matched
    against the calls, then exactly that grant is reported unused and unjustified.

    Fails if: direction 2 stops enumerating grants, or infra/permissions.py excuses an action
    for a function or resource it does not name.
    """
    resource = next(
        c.resource for e in drive.evidence for c in e.calls[function] if c.action == on_resource_of
    )
    assert resource is not None
    edited = [
        _edited(e, function, lambda s: _with_extra(s, extra, resource)) for e in drive.evidence
    ]

    problems = unused_grants(edited)

    assert problems == [
        f"{function}: {extra} on {resource} (extra) is granted but never called, and "
        "infra/permissions.py gives no reason"
    ]


def test_f20_an_iam_token_is_judged_as_rds_db_connect_for_its_user(
    drive: Drive,
    synthesized: dict[str, Synthesized],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Given the deployed DB login (DB_AUTH=iam: a token signed locally by
    orders_saga.adapters.rds_iam, no API call), when it runs in-process with the call recorder
    installed, then it is on record as rds-db:connect, judged allowed on the proxy's app user
    and denied for another user.

    Fails if: the recorder stops seeing token generation, or the roles' rds-db:connect stops
    being scoped to the proxy and the one database user.
    """
    from orders_saga.adapters.database import IamTokenCredentials
    from orders_saga.config import DatabaseSettings

    evidence = drive.driven
    template = CfnTemplate(
        synthesized["dev"].raw,
        stack_name=evidence.recording.stack_name,
        region=evidence.recording.region,
        account_id=evidence.recording.account_id,
    )
    resolver = local_resolver(template, evidence.recording)
    api_lid, api_props = our_functions(synthesized["dev"])["Api"]
    env = api_props["Environment"]["Variables"]
    host = resolver.resolve_str(env["DB_HOST"])
    monkeypatch.setenv("AWS_REGION", template.region)
    recorder = call_recorder.install(CallRecorder(tmp_path / "api.calls.jsonl", function="api"))
    try:
        for user in (env["DB_USER"], "orders_admin"):
            settings = DatabaseSettings(
                host,
                5432,
                "orders",
                user,
                "iam",
                None,
                "verify-full",
                "amazon-root-cas.pem",
                3,
                5000,
                "test",
            )
            IamTokenCredentials(settings).credentials(refresh=False)
    finally:
        call_recorder.uninstall()

    recorded = [RecordedCall.from_json(line) for line in recorder.path.read_text().splitlines()]
    judged = [deployed_view(c, "Api", env, resolver, set()) for c in recorded]
    decisions = [evaluate(evidence.statements["Api"], c.action, c.resource) for c in judged]
    assert [c.action for c in judged] == ["rds-db:connect", "rds-db:connect"]
    assert decisions == [Decision.ALLOWED, Decision.IMPLICIT_DENY]
    assert api_lid in evidence.recording.physical


def granted_actions(stack: Synthesized) -> dict[str, set[tuple[str, str]]]:
    """Function -> (effect, action) of every statement on its role, resources unresolved."""
    template = CfnTemplate(stack.raw, stack_name=this_service().stack(stack.config.name))
    out: dict[str, set[tuple[str, str]]] = {}
    for name, (_, props) in our_functions(stack).items():
        role = template.referenced_id(props["Role"])
        out[name] = set()
        for policy in template.resources("AWS::IAM::Policy"):
            if role in template.referenced_ids(policy.properties.get("Roles", [])):
                for raw in policy.properties["PolicyDocument"]["Statement"]:
                    actions = raw.get("Action", [])
                    for action in [actions] if isinstance(actions, str) else actions:
                        out[name].add((str(raw["Effect"]), str(action)))
    return out


def test_f20_prod_roles_grant_exactly_what_the_proven_dev_roles_grant(
    synthesized: dict[str, Synthesized],
) -> None:
    """Given both synthesized stages, when each function's role actions are compared, then
    prod grants exactly the actions dev grants: the recorded proof (made on the dev template,
    which the local stack runs) covers what production runs with.

    Fails if: a grant is made for one stage only (a config flag adding an action in prod), so
    prod would hold an action no recording ever judged.
    """
    dev, prod = granted_actions(synthesized["dev"]), granted_actions(synthesized["prod"])

    assert set(dev) == set(FUNCTION_NAMES)
    assert all(dev[name] for name in FUNCTION_NAMES)
    assert prod == dev
