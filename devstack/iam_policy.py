"""A small evaluator for IAM identity policies, for the least-privilege proof (F20).

Why not moto's ``moto.iam.access_control.IAMPolicy``: checked with moto 5.2.5, it matches
actions case-sensitively (IAM does not), treats ``NotResource`` as "every resource" (fails
open), grants a conditional ``Allow`` when no request context is given (fails open) but turns
it into an explicit deny when the context does not match (so one conditional statement cancels
every other grant), knows no ``?`` wildcard and reads ARNs as regular expressions (``.``
matches any character). Close enough for moto's request checks, not for a proof.

What this one does, for identity policies (no resource policies, boundaries or SCPs):
- an explicit ``Deny`` wins over any ``Allow``; nothing allowed is an implicit deny;
- ``Action``/``NotAction`` match case-insensitively with ``*`` and ``?``;
- ``Resource``/``NotResource`` match case-sensitively; ``*`` and ``?`` stay within one
  colon-separated ARN segment, except a ``*`` that ends a segment, which may run on across
  colons (IAM's documented rule, so ``arn:...:function:name:*`` covers every qualifier);
- a call whose resource is unknown (``None``) is allowed only by a grant on ``*``;
- **conditions fail closed**: the evaluator has no request context, so a conditional
  ``Allow`` never counts as granting and a conditional ``Deny`` always counts as denying;
- a statement without ``Resource``/``NotResource``, or with a ``Principal``, is not a valid
  identity policy statement and raises ``PolicyError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any


class PolicyError(ValueError):
    """The document is not an identity policy this evaluator can judge."""


class Decision(Enum):
    ALLOWED = "allowed"
    IMPLICIT_DENY = "not allowed by any statement"
    EXPLICIT_DENY = "explicitly denied"


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError(f"{where}: expected a string or a non-empty list of strings, got {value!r}")


@cache
def _action_regex(pattern: str) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower())
    return re.compile(f"^{body}$", re.DOTALL)


@cache
def _resource_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    for index, char in enumerate(pattern):
        if char == "*":
            ends_segment = index + 1 == len(pattern) or pattern[index + 1] == ":"
            parts.append(".*" if ends_segment else "[^:]*")
        elif char == "?":
            parts.append("[^:]")
        else:
            parts.append(re.escape(char))
    return re.compile(f"^{''.join(parts)}$", re.DOTALL)


def action_matches(pattern: str, action: str) -> bool:
    return _action_regex(pattern).match(action.lower()) is not None


def resource_matches(pattern: str, resource: str | None) -> bool:
    """``None`` is a resource nobody could name: only ``*`` covers it."""
    if resource is None:
        return pattern == "*"
    return _resource_regex(pattern).match(resource) is not None


@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" or "Deny"
    actions: tuple[str, ...] | None  # None when the statement uses NotAction
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None  # None when the statement uses NotResource
    not_resources: tuple[str, ...] | None
    conditional: bool
    source: str = ""  # where it came from (policy and index), for messages

    @classmethod
    def parse(cls, raw: Mapping[str, Any], source: str = "") -> Statement:
        where = source or "statement"
        effect = raw.get("Effect")
        if effect not in {"Allow", "Deny"}:
            raise PolicyError(f"{where}: Effect must be Allow or Deny, got {effect!r}")
        if "Principal" in raw or "NotPrincipal" in raw:
            raise PolicyError(f"{where}: a Principal belongs in a resource policy")
        if ("Action" in raw) == ("NotAction" in raw):
            raise PolicyError(f"{where}: exactly one of Action and NotAction")
        if ("Resource" in raw) == ("NotResource" in raw):
            raise PolicyError(f"{where}: exactly one of Resource and NotResource")
        return cls(
            effect=str(effect),
            actions=_strings(raw["Action"], where) if "Action" in raw else None,
            not_actions=_strings(raw["NotAction"], where) if "NotAction" in raw else None,
            resources=_strings(raw["Resource"], where) if "Resource" in raw else None,
            not_resources=_strings(raw["NotResource"], where) if "NotResource" in raw else None,
            conditional=bool(raw.get("Condition")),
            source=source,
        )

    def covers_action(self, action: str) -> bool:
        if self.actions is not None:
            return any(action_matches(p, action) for p in self.actions)
        assert self.not_actions is not None
        return not any(action_matches(p, action) for p in self.not_actions)

    def covers_resource(self, resource: str | None) -> bool:
        if self.resources is not None:
            return any(resource_matches(p, resource) for p in self.resources)
        assert self.not_resources is not None
        if resource is None:
            return False  # an unknown resource may be one of the excluded ones
        return not any(resource_matches(p, resource) for p in self.not_resources)

    def denies(self, action: str, resource: str | None) -> bool:
        if self.effect != "Deny" or not self.covers_action(action):
            return False
        # Fail closed: an unknown resource, or an unknowable condition, counts as denied.
        return resource is None or self.conditional or self.covers_resource(resource)

    def allows(self, action: str, resource: str | None) -> bool:
        return (
            self.effect == "Allow"
            and not self.conditional  # fail closed: no request context to satisfy it
            and self.covers_action(action)
            and self.covers_resource(resource)
        )


def parse_policy(document: Mapping[str, Any], source: str = "") -> list[Statement]:
    """The statements of one policy document (``{"Version", "Statement"}``)."""
    raw = document.get("Statement")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"{source or 'policy'}: no Statement")
    return [Statement.parse(s, f"{source}#{i}" if source else f"#{i}") for i, s in enumerate(raw)]


def evaluate(statements: Iterable[Statement], action: str, resource: str | None) -> Decision:
    """IAM's identity-policy logic: explicit deny, else allow, else implicit deny."""
    allowed = False
    for statement in statements:
        if statement.denies(action, resource):
            return Decision.EXPLICIT_DENY
        allowed = allowed or statement.allows(action, resource)
    return Decision.ALLOWED if allowed else Decision.IMPLICIT_DENY


@dataclass(frozen=True)
class Grant:
    """One (action, resource) pair an ``Allow`` statement names: the unit of least privilege."""

    action: str
    resource: str
    conditional: bool
    source: str

    @property
    def wildcard_action(self) -> bool:
        return "*" in self.action or "?" in self.action

    def covers(self, action: str, resource: str | None) -> bool:
        return action_matches(self.action, action) and resource_matches(self.resource, resource)


def allow_grants(statements: Sequence[Statement]) -> list[Grant]:
    """Every (action, resource) an ``Allow`` names. An ``Allow`` with NotAction or NotResource
    grants an open-ended set, which least privilege cannot enumerate: ``PolicyError``."""
    grants: list[Grant] = []
    for statement in statements:
        if statement.effect != "Allow":
            continue
        if statement.actions is None or statement.resources is None:
            raise PolicyError(f"{statement.source}: an Allow with NotAction/NotResource")
        grants.extend(
            Grant(action, resource, statement.conditional, statement.source)
            for action in statement.actions
            for resource in statement.resources
        )
    return grants
