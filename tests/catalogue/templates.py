"""Read-only helpers over a synthesized CloudFormation template, shared by the F-row modules.

They lean on the guardrail's own parsing (``infra.guardrails``) only to *read* the template;
every assertion in the catalogue modules is made independently of the guardrail's rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from infra.functions import HANDLERS
from infra.guardrails import (
    ACKNOWLEDGED_KEY,
    Resources,
    iter_states,
    state_machine_definition,
)
from tests.infra.conftest import Synthesized

Json = Any
_TOKEN = re.compile(r"__TOKEN_(\d+)__")
LOGICAL_NAME_BY_HANDLER = {handler: name for name, handler in HANDLERS.items()}


def resources(stack: Synthesized) -> Resources:
    return Resources(stack.raw)


def our_functions(stack: Synthesized) -> dict[str, tuple[str, Mapping[str, Json]]]:
    """Logical function name (infra.config.FUNCTION_NAMES) -> (logical id, properties)."""
    found: dict[str, tuple[str, Mapping[str, Json]]] = {}
    for logical_id, props in resources(stack).of_type("AWS::Lambda::Function"):
        name = LOGICAL_NAME_BY_HANDLER.get(props.get("Handler", ""))
        if name is not None:
            found[name] = (logical_id, props)
    return found


def acknowledged(stack: Synthesized, logical_id: str, catalogue_id: str) -> bool:
    """The resource carries the guardrail's explicit exception for this row, with a reason."""
    reasons = resources(stack).metadata(logical_id).get(ACKNOWLEDGED_KEY) or {}
    reason = reasons.get(catalogue_id)
    return isinstance(reason, str) and bool(reason.strip())


class Saga:
    """The saga's ASL with its CloudFormation tokens resolvable back to logical ids."""

    def __init__(self, stack: Synthesized) -> None:
        res = resources(stack)
        ((self.logical_id, props),) = list(res.of_type("AWS::StepFunctions::StateMachine"))
        definition = state_machine_definition(props)
        assert definition is not None, "the saga definition must be readable"
        self.definition: Mapping[str, Json] = definition
        separator, parts = props["DefinitionString"]["Fn::Join"]
        assert separator == ""
        self._tokens: dict[int, Json] = {
            index: part for index, part in enumerate(parts) if not isinstance(part, str)
        }
        self._res = res

    def states(self) -> Iterator[tuple[str, Mapping[str, Json]]]:
        return iter_states(self.definition)

    def state(self, name: str) -> Mapping[str, Json]:
        return dict(self.states())[name]

    def tokens_in(self, text: Json) -> list[Json]:
        """The CloudFormation expressions behind the placeholders inside one ASL string."""
        return [self._tokens[int(i)] for i in _TOKEN.findall(str(text))]

    def lambda_target(self, state: Mapping[str, Json]) -> str | None:
        """Logical id of the function a Task invokes (through its alias), else None."""
        for token in self.tokens_in(state.get("Resource", "")):
            fn = self._res.function_of(token)
            if fn is not None:
                return fn
        return None

    def lambda_tasks(self) -> list[tuple[str, Mapping[str, Json], str]]:
        found = []
        for name, state in self.states():
            if state.get("Type") == "Task":
                fn = self.lambda_target(state)
                if fn is not None:
                    found.append((name, state, fn))
        return found
