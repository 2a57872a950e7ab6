"""The F20 policy evaluator's own tests (devstack/iam_policy.py): IAM's identity-policy rules,
each with the case that would slip through if the rule were missing."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.iam_policy import (
    Decision,
    PolicyError,
    Statement,
    allow_grants,
    evaluate,
    parse_policy,
    resource_matches,
)

QUEUE = "arn:aws:sqs:eu-west-1:123456789012:orders"
OTHER_QUEUE = "arn:aws:sqs:eu-west-1:123456789012:orders-dlq"
FUNCTION = "arn:aws:lambda:eu-west-1:123456789012:function:orders-api"


def policy(*statements: dict[str, Any]) -> list[Statement]:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)}, "test")


def allow(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any, resource: Any, **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def test_an_exact_grant_allows_only_its_action_on_its_resource() -> None:
    statements = policy(allow("sqs:SendMessage", QUEUE))

    assert evaluate(statements, "sqs:SendMessage", QUEUE) is Decision.ALLOWED
    assert evaluate(statements, "sqs:ReceiveMessage", QUEUE) is Decision.IMPLICIT_DENY
    assert evaluate(statements, "sqs:SendMessage", OTHER_QUEUE) is Decision.IMPLICIT_DENY


def test_nothing_granted_is_an_implicit_deny() -> None:
    assert evaluate([], "sqs:SendMessage", QUEUE) is Decision.IMPLICIT_DENY


def test_actions_match_case_insensitively_and_with_wildcards() -> None:
    assert evaluate(policy(allow("SQS:sendmessage", QUEUE)), "sqs:SendMessage", QUEUE) is (
        Decision.ALLOWED
    )
    assert evaluate(policy(allow("sqs:Send*", QUEUE)), "sqs:SendMessage", QUEUE) is (
        Decision.ALLOWED
    )
    assert evaluate(policy(allow("sqs:?endMessage", QUEUE)), "sqs:SendMessage", QUEUE) is (
        Decision.ALLOWED
    )
    assert evaluate(policy(allow("sqs:Send*", QUEUE)), "sqs:DeleteMessage", QUEUE) is (
        Decision.IMPLICIT_DENY
    )


def test_resources_match_case_sensitively_and_literally() -> None:
    assert not resource_matches(QUEUE.upper(), QUEUE)
    # A "." in an ARN is a dot, not "any character" (moto's regex reading).
    assert not resource_matches(
        "arn:aws:sqs:eu-west-1:123456789012:a.b", "arn:aws:sqs:eu-west-1:123456789012:aXb"
    )


def test_a_wildcard_stays_in_its_segment_unless_it_ends_the_segment() -> None:
    # "*" inside a segment does not run across a colon ...
    assert not resource_matches("arn:aws:lambda:eu-west-1:*-1:function:x", FUNCTION)
    assert resource_matches("arn:aws:lambda:eu-west-1:1234*:function:orders-api", FUNCTION)
    # ... but a "*" that ends a segment does: a function's qualified ARNs.
    assert resource_matches(f"{FUNCTION}:*", f"{FUNCTION}:7")
    assert not resource_matches(f"{FUNCTION}:*", FUNCTION)
    assert not resource_matches(f"{FUNCTION}:*", f"{FUNCTION}-other:7")
    assert resource_matches("*", QUEUE)
    assert resource_matches(
        "arn:aws:sqs:eu-west-1:123456789012:order?", "arn:aws:sqs:eu-west-1:123456789012:orders"
    )
    assert not resource_matches("arn:aws:sqs:eu-west-1:123456789012:order?", QUEUE + "x")


def test_an_explicit_deny_wins_over_any_allow() -> None:
    statements = policy(allow("sqs:*", "*"), deny("sqs:SendMessage", QUEUE))

    assert evaluate(statements, "sqs:SendMessage", QUEUE) is Decision.EXPLICIT_DENY
    assert evaluate(statements, "sqs:SendMessage", OTHER_QUEUE) is Decision.ALLOWED


def test_not_action_allows_everything_else() -> None:
    statements = policy({"Effect": "Allow", "NotAction": "sqs:DeleteQueue", "Resource": QUEUE})

    assert evaluate(statements, "sqs:SendMessage", QUEUE) is Decision.ALLOWED
    assert evaluate(statements, "sqs:DeleteQueue", QUEUE) is Decision.IMPLICIT_DENY


def test_not_resource_excludes_its_resources() -> None:
    # moto's evaluator allows the excluded queue here (it ignores NotResource): fails open.
    statements = policy({"Effect": "Allow", "Action": "sqs:SendMessage", "NotResource": QUEUE})

    assert evaluate(statements, "sqs:SendMessage", QUEUE) is Decision.IMPLICIT_DENY
    assert evaluate(statements, "sqs:SendMessage", OTHER_QUEUE) is Decision.ALLOWED
    assert evaluate(statements, "sqs:SendMessage", None) is Decision.IMPLICIT_DENY


def test_conditions_fail_closed() -> None:
    condition = {"Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}
    # A conditional Allow cannot be shown to apply: it grants nothing ...
    assert evaluate(
        policy(allow("sqs:SendMessage", QUEUE, **condition)), "sqs:SendMessage", QUEUE
    ) is (Decision.IMPLICIT_DENY)
    # ... and a conditional Deny is taken to apply.
    statements = policy(
        allow("sqs:SendMessage", QUEUE), deny("sqs:SendMessage", QUEUE, **condition)
    )
    assert evaluate(statements, "sqs:SendMessage", QUEUE) is Decision.EXPLICIT_DENY


def test_an_unknown_resource_needs_a_grant_on_everything() -> None:
    assert evaluate(policy(allow("sqs:SendMessage", QUEUE)), "sqs:SendMessage", None) is (
        Decision.IMPLICIT_DENY
    )
    assert evaluate(policy(allow("xray:PutTraceSegments", "*")), "xray:PutTraceSegments", None) is (
        Decision.ALLOWED
    )
    # A Deny on any resource might be on this one.
    statements = policy(allow("sqs:SendMessage", "*"), deny("sqs:SendMessage", QUEUE))
    assert evaluate(statements, "sqs:SendMessage", None) is Decision.EXPLICIT_DENY


def test_a_single_statement_object_and_a_single_string_are_accepted() -> None:
    statements = parse_policy({"Statement": allow("sqs:SendMessage", QUEUE)})
    assert evaluate(statements, "sqs:SendMessage", QUEUE) is Decision.ALLOWED


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Action": "sqs:SendMessage"},  # no Resource
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": QUEUE, "NotResource": QUEUE},
        {"Effect": "Allow", "Resource": QUEUE},  # no Action
        {"Effect": "Maybe", "Action": "sqs:SendMessage", "Resource": QUEUE},
        {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": QUEUE, "Principal": "*"},
        {"Effect": "Allow", "Action": [], "Resource": QUEUE},
    ],
)
def test_an_invalid_identity_statement_is_refused(statement: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        policy(statement)


def test_grants_enumerate_every_allowed_pair_and_refuse_open_ended_allows() -> None:
    grants = allow_grants(
        policy(
            allow(["sqs:SendMessage", "sqs:GetQueueUrl"], [QUEUE, OTHER_QUEUE]),
            deny("sqs:DeleteQueue", "*"),
        )
    )

    assert {(g.action, g.resource) for g in grants} == {
        ("sqs:SendMessage", QUEUE),
        ("sqs:SendMessage", OTHER_QUEUE),
        ("sqs:GetQueueUrl", QUEUE),
        ("sqs:GetQueueUrl", OTHER_QUEUE),
    }
    assert grants[0].covers("sqs:sendmessage", QUEUE)
    assert allow_grants(policy(allow("sqs:*", QUEUE)))[0].wildcard_action
    with pytest.raises(PolicyError):
        allow_grants(policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}))
