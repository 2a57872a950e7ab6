"""parliament (the IAM linter, PyPI) over every policy document of both synthesized stages.

An independent check beside cdk-nag and cfn-lint (issue 10): parliament knows each action's
resource types and ARN formats, so it catches a grant on the wrong ARN shape, an unknown
action or a needless "*". Intrinsics are resolved to plausible literals first
(tests/infra/plausible_arns.py). Findings are fixed, or acknowledged with a reason in
infra/lint_acknowledgements.yaml; an acknowledgement that no longer matches fails too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.infra.lint_acknowledgements import (
    Finding,
    load_acknowledgements,
    stale,
    unacknowledged,
)
from tests.infra.plausible_arns import PlausibleResolver
from tests.synth import Synthesized

with warnings.catch_warnings():
    # parliament 1.6.4 imports pkg_resources and has non-raw regex strings: warnings about
    # its own source, not about our policies.
    warnings.simplefilter("ignore")
    from parliament import analyze_policy_string, enhance_finding

# Where each resource type keeps its policy document(s).
DOCUMENT_PROPERTY = {
    "AWS::IAM::Policy": "PolicyDocument",
    "AWS::IAM::ManagedPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
    "AWS::SecretsManager::ResourcePolicy": "ResourcePolicy",
    "AWS::KMS::Key": "KeyPolicy",
}


def policy_documents(template: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(logical id, document name, document) for every identity and resource policy."""
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        name = DOCUMENT_PROPERTY.get(resource["Type"])
        if name is not None and name in properties:
            yield logical_id, name, properties[name]
        if resource["Type"] == "AWS::IAM::Role":
            for inline in properties.get("Policies", []):
                yield logical_id, f"Policies/{inline['PolicyName']}", inline["PolicyDocument"]


def lint_document(where: str, document: Any) -> list[Finding]:
    policy = analyze_policy_string(json.dumps(document))
    findings = []
    for raw in policy.findings:
        finding = enhance_finding(raw)
        findings.append(Finding(str(finding.issue), where, json.dumps(finding.detail, default=str)))
    return findings


def lint_stage(stack: Synthesized) -> list[Finding]:
    resolver = PlausibleResolver(stack.raw)
    findings: list[Finding] = []
    for logical_id, name, document in policy_documents(stack.raw):
        where = f"{stack.config.name}/{logical_id}/{name}"
        findings.extend(lint_document(where, resolver.resolve(document)))
    return findings


@pytest.fixture(scope="module")
def findings(synthesized: dict[str, Synthesized]) -> list[Finding]:
    return [finding for stack in synthesized.values() for finding in lint_stage(stack)]


def test_every_kind_of_policy_document_is_linted(synthesized: dict[str, Synthesized]) -> None:
    # A template change that moved policies elsewhere would silently shrink what is checked.
    for stack in synthesized.values():
        kinds = {
            stack.raw["Resources"][logical_id]["Type"]
            for logical_id, _, _ in policy_documents(stack.raw)
        }
        assert {
            "AWS::IAM::Policy",
            "AWS::SQS::QueuePolicy",
            "AWS::SNS::TopicPolicy",
            "AWS::KMS::Key",
        } <= kinds, kinds


def test_parliament_finds_a_wrong_grant() -> None:
    # Given a misspelt action on a queue ARN shape (the linter is wired up and sees it)
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sqs:SendMesage",
                "Resource": "arn:aws:sqs:eu-west-1:111111111111:orders",
            }
        ],
    }

    # When / Then
    assert [f.finding for f in lint_document("unit/Policy/PolicyDocument", document)] == [
        "UNKNOWN_ACTION"
    ]


def test_parliament_findings_are_fixed_or_acknowledged(findings: list[Finding]) -> None:
    missing = unacknowledged(findings, load_acknowledgements("parliament"))
    assert not missing, "fix, or acknowledge in infra/lint_acknowledgements.yaml:\n" + "\n".join(
        map(str, missing)
    )


def test_every_parliament_acknowledgement_still_matches_a_finding(
    findings: list[Finding],
) -> None:
    leftover = stale(findings, load_acknowledgements("parliament"))
    assert not leftover, f"remove from infra/lint_acknowledgements.yaml: {leftover}"
