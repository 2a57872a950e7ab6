"""F12: every traffic-serving function reaches production through CodeDeploy.

A new version (CDK's `current_version` changes with the code or configuration) updates the
function's `live` alias; the alias' `CodeDeployLambdaAliasUpdate` update policy hands that
update to the function's deployment group, which then
1. invokes the shared `PreTrafficHook` (BeforeAllowTraffic): it runs the new version's
   health-check branch and reports Succeeded/Failed (logic/pre_traffic_check.py);
2. shifts traffic as the stage says (`config.deployment.traffic_shifting`: a 10 % canary for
   5 minutes in prod, all at once in dev);
3. rolls the alias back to the previous version when the deployment fails, is stopped, or
   any rollback alarm fires while it runs.

Rollback alarms watch the NEW version only: Lambda publishes alias invocations with the
dimensions FunctionName, Resource (`<function>:live`) and ExecutedVersion, so a canary's 10 %
is judged on its own, and the old version's errors cannot roll back a good deploy. The hook's
own invoke targets the version, not the alias, and is not counted in these metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.catalogue import failure
from infra.config import PRE_TRAFFIC_HOOK, StageConfig
from infra.functions import LIVE_ALIAS, FunctionAssets, HardenedFunction
from infra.nag import acknowledge

# Functions whose alias no deployment group manages, with the reason.
NOT_CODEDEPLOYED: Final[Mapping[str, str]] = {
    # Migrate serves no traffic: the CDK trigger invokes it once per deploy, inside the
    # CloudFormation update, to shape the schema before the new versions run. A canary has
    # no traffic to split there, a rollback cannot un-apply a migration, and a deployment
    # group would race the trigger that is already running it.
    "Migrate": "run once per deploy by its CDK trigger, serves no traffic",
}
# CodeDeploy accepts at most 10 CloudWatch alarms per deployment group.
MAX_ALARMS_PER_GROUP: Final = 10
ALARM_PERIOD: Final = Duration.minutes(1)  # Lambda's metric resolution; a canary lasts minutes
LAMBDA_NAMESPACE: Final = "AWS/Lambda"


class Deployments(Construct):
    """One CodeDeploy application, one deployment group per function alias, one hook."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        functions: Mapping[str, HardenedFunction],
        assets: FunctionAssets,
        extra_rollback_alarms: Sequence[cloudwatch.IAlarm] = (),
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        """`extra_rollback_alarms` (e.g. the saga failure rate) roll back every group;
        `alarm_topic` receives the F12 alarms' ALARM and OK notifications."""
        super().__init__(scope, construct_id)
        self._config = config
        self._settings = config.deployment
        self._action = None if alarm_topic is None else cw_actions.SnsAction(alarm_topic)
        deployed = {name: fn for name, fn in functions.items() if name not in NOT_CODEDEPLOYED}
        if 2 + len(extra_rollback_alarms) > MAX_ALARMS_PER_GROUP:
            raise ValueError(
                f"a deployment group takes at most {MAX_ALARMS_PER_GROUP} alarms: "
                f"2 per function + {len(extra_rollback_alarms)} extra is too many"
            )

        self.application = codedeploy.LambdaApplication(self, "Application")
        # Outside the VPC on purpose: it calls only the Lambda and CodeDeploy APIs.
        self.hook = HardenedFunction(
            self,
            PRE_TRAFFIC_HOOK,
            config=config,
            assets=assets,
            # F07: one health-check invoke may take a cold start of the new version.
            environment={"AWS_READ_TIMEOUT_S": str(self._settings.health_check_timeout_s)},
        )
        self.rollback_alarms: dict[str, list[cloudwatch.IAlarm]] = {}
        self.groups: dict[str, codedeploy.LambdaDeploymentGroup] = {}
        extra = [self._by_name(alarm, index) for index, alarm in enumerate(extra_rollback_alarms)]
        for name, fn in deployed.items():
            alarms = [self._errors_alarm(name, fn), self._latency_alarm(name, fn)]
            self.rollback_alarms[name] = [*alarms, *extra]
            self.groups[name] = self._group(name, fn, self.rollback_alarms[name])

    def _by_name(self, alarm: cloudwatch.IAlarm, index: int) -> cloudwatch.IAlarm:
        """An extra alarm referenced by its literal AlarmName, not a Ref.

        A Ref would be a dependency: alias -> group -> alarm, and an alarm on the saga (the
        state machine's metrics) -> state machine -> its role's invoke grant on the step
        aliases closes the cycle. The lost ordering is harmless: no deployment runs when a
        group is created, and tests/infra/test_deployments.py checks the names exist.
        """
        cfn = alarm.node.default_child
        literal = cfn.alarm_name if isinstance(cfn, cloudwatch.CfnAlarm) else alarm.alarm_name
        if not isinstance(literal, str) or cdk.Token.is_unresolved(literal):
            raise ValueError(
                f"rollback alarm {alarm.node.path} needs an explicit alarm_name: CodeDeploy "
                "groups name it literally to keep CloudFormation free of cycles"
            )
        return cloudwatch.Alarm.from_alarm_name(self, f"ExtraRollbackAlarm{index}", literal)

    # -- per function ----------------------------------------------------------------------

    def _group(
        self, name: str, fn: HardenedFunction, alarms: Sequence[cloudwatch.IAlarm]
    ) -> codedeploy.LambdaDeploymentGroup:
        group = codedeploy.LambdaDeploymentGroup(
            self,
            f"{name}Group",
            application=self.application,
            alias=fn.alias,
            deployment_config=self._settings.traffic_shifting,
            alarms=list(alarms),
            # A failed hook, a fired alarm or an operator's stop all put the old version back.
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, deployment_in_alarm=True, stopped_deployment=True
            ),
        )
        hook, grants = self._hook_for(name)
        # CDK sets BeforeAllowTraffic on the alias' update policy, lets the group's role invoke
        # the hook, and grants the hook PutLifecycleEventHookExecutionStatus on this group.
        group.add_pre_hook(hook)
        # F20: the hook reads this deployment (GetDeployment is authorized on the group) and
        # invokes the version it deploys. That number is only known from the AppSpec, so the
        # grant covers this function's qualified ARNs: no other function, no $LATEST by ARN.
        grants.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["codedeploy:GetDeployment"], resources=[group.deployment_group_arn]
            )
        )
        grants.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"], resources=[f"{fn.function.function_arn}:*"]
            )
        )
        # The alias' update policy Refs the group and the hook, and CloudFormation orders on
        # those Refs (aws-cdk#2231): group, hook, its grants and the F12 alarms (with the new
        # ExecutedVersion) are in place before the alias starts a deployment. cfn-lint's cycle
        # check does not read UpdatePolicy, so the edges are also stated as DependsOn: a
        # cycle through them fails synthesis instead of the CloudFormation deploy.
        fn.alias.node.add_dependency(group, self.hook, grants)
        acknowledge(
            group,
            {
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AWSCodeDeployRoleForLambdaLimited]": "F12: the AWS-managed policy for Lambda "
                "deployment groups, the limited variant: alias get/update, alarm reads and "
                "invoking only CodeDeployHook_* functions; CDK adds the invoke of our hook",
                f"AwsSolutions-IAM5[Resource::<{_logical_id(self.hook)}.Arn>:*]": "F12: CDK's "
                "grantInvoke on the pre-traffic hook adds its qualified ARNs; CodeDeploy "
                "invokes the hook unqualified, and only this group's role gets the grant",
            },
        )
        acknowledge(
            grants,
            {
                f"AwsSolutions-IAM5[Resource::<{_logical_id(fn)}.Arn>:*]": (
                    f"F12: the pre-traffic hook invokes the version of {name} that CodeDeploy "
                    "is deploying; its number is only known from the deployment's AppSpec"
                ),
            },
        )
        return group

    def _hook_for(self, name: str) -> tuple[lambda_.IFunction, iam.IRole]:
        """The shared hook as this group sees it: its grants go to a policy of their own.

        The hook's role is imported here so that everything granted for this group lands in
        a separate AWS::IAM::Policy (on the same role) instead of the role's default policy,
        which the hook function itself depends on. With one shared policy, every alias would
        depend (through the hook) on every group, alarm and function, and Intake's function
        (-> state machine -> step aliases) would close a cycle. Per group, an alias depends
        only on its own function's grants.
        """
        grants = iam.Role.from_role_arn(self, f"{name}HookGrants", self.hook.role.role_arn)
        hook = lambda_.Function.from_function_attributes(
            self,
            f"{name}Hook",
            function_arn=self.hook.function.function_arn,
            role=grants,
            # The group's role gets an identity grant to invoke the hook; no resource-based
            # Permission on top (CDK cannot compare the imported ARN's account).
            skip_permissions=True,
        )
        return hook, grants

    def _dimensions(self, fn: HardenedFunction) -> dict[str, str]:
        function_name = fn.function.function_name
        return {
            "FunctionName": function_name,
            "Resource": f"{function_name}:{LIVE_ALIAS}",
            # The version this deploy creates: the alarm judges only the new code.
            "ExecutedVersion": fn.function.current_version.version,
        }

    def _metric(self, fn: HardenedFunction, metric_name: str, statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=LAMBDA_NAMESPACE,
            metric_name=metric_name,
            dimensions_map=self._dimensions(fn),
            statistic=statistic,
            period=ALARM_PERIOD,
        )

    def _errors_alarm(self, name: str, fn: HardenedFunction) -> cloudwatch.Alarm:
        s = self._settings
        # Saga steps raise business outcomes (OutOfStock, PaymentDeclined) as function
        # errors: a rate, counted only once there are enough errors to mean something.
        rate = cloudwatch.MathExpression(
            expression=(
                f"IF(FILL(errors, 0) >= {s.rollback_min_errors}, "
                "100 * FILL(errors, 0) / invocations, 0)"
            ),
            using_metrics={
                "errors": self._metric(fn, "Errors", cloudwatch.Stats.SUM),
                "invocations": self._metric(fn, "Invocations", cloudwatch.Stats.SUM),
            },
            label=f"{name} new version error rate (%)",
            period=ALARM_PERIOD,
        )
        return self._alarm(
            f"F12-{name}-errors",
            metric=rate,
            threshold=s.rollback_error_rate_percent,
            evaluation_periods=s.errors_evaluation_periods,
            datapoints_to_alarm=s.errors_evaluation_periods,
            summary=(
                f"{name}'s new version (alias {LIVE_ALIAS}) failed over "
                f"{s.rollback_error_rate_percent:g}% of its invocations "
                f"(at least {s.rollback_min_errors} errors a minute): CodeDeploy stops the "
                "deployment and puts the previous version back on the alias"
            ),
        )

    def _latency_alarm(self, name: str, fn: HardenedFunction) -> cloudwatch.Alarm:
        s = self._settings
        timeout_ms = self._config.function(name).timeout_s * 1000
        bound_ms = timeout_ms * s.rollback_latency_p99_percent_of_timeout // 100
        return self._alarm(
            f"F12-{name}-latency-p99",
            metric=self._metric(fn, "Duration", cloudwatch.Stats.p(99)),
            threshold=bound_ms,
            evaluation_periods=s.latency_evaluation_periods,
            datapoints_to_alarm=s.latency_datapoints_to_alarm,
            summary=(
                f"{name}'s new version (alias {LIVE_ALIAS}) has a p99 duration above "
                f"{bound_ms} ms ({s.rollback_latency_p99_percent_of_timeout}% of its "
                f"{timeout_ms // 1000} s timeout): CodeDeploy stops the deployment and puts "
                "the previous version back on the alias"
            ),
        )

    def _alarm(
        self,
        alarm_name: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        evaluation_periods: int,
        datapoints_to_alarm: int,
        summary: str,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            alarm_name,
            # The stage in the name: a group names its alarms literally (issue 10, finding 5).
            alarm_name=self._config.alarm_name(alarm_name),
            # docs/operations-contract.md: what fired and why, then the runbook.
            alarm_description=f"{summary}.\nRunbook: {failure('F12').runbook_url}",
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            # No invocations of the new version is no evidence against it.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        if self._action is not None:
            alarm.add_alarm_action(self._action)
            alarm.add_ok_action(self._action)
        return alarm


def _logical_id(fn: HardenedFunction) -> str:
    """The function's logical id, as cdk-nag names it in a finding (`<Id.Arn>`)."""
    resource = fn.function.node.default_child
    if not isinstance(resource, cdk.CfnElement):
        raise TypeError(f"{fn.node.path} has no CloudFormation function")
    return cdk.Stack.of(fn).get_logical_id(resource)
