"""cdk-nag (AwsSolutions) on the whole app, and the one way to acknowledge a finding.

cdk-nag 3 runs as a CDK policy-validation plugin: a finding that is not acknowledged stops
synthesis. Every acknowledgement names its rule (with the finding, for multi-finding rules
such as `AwsSolutions-IAM5[Resource::*]`) and a reason specific to this system.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_nag(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))


# Validation rule ids are namespaced by the plugin that reports them.
PLUGIN_PREFIX = "AwsSolutions::"


def acknowledge(scope: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge `{rule_id: reason}` on `scope` and everything below it.

    `rule_id` is the cdk-nag id as reported, e.g. `AwsSolutions-L1` or
    `AwsSolutions-IAM5[Resource::*]`.
    """
    for rule_id, reason in reasons.items():
        if len(reason.strip()) < 20:
            raise ValueError(f"{rule_id}: give a specific reason, not {reason!r}")
        cdk.Validations.of(scope).acknowledge(
            cdk.Acknowledgment(id=f"{PLUGIN_PREFIX}{rule_id}", reason=reason)
        )
