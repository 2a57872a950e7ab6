"""asl-validator (npm, pinned in package-lock.json) over the saga's state machine, both stages.

An independent check of the Amazon States Language beside cdk-nag and cfn-lint (issue 10):
transitions to missing states, unreachable or terminal-less machines, bad JSONPath, Retry and
Catch fields, Resource ARN formats. The DefinitionString is a Fn::Join around Refs; it is
resolved to concrete JSON with plausible ARNs first (tests/infra/plausible_arns.py). Runs
offline through the package's JS API; acknowledgements live in
infra/lint_acknowledgements.yaml like parliament's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
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

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "node_modules" / "asl-validator"
# Reads one definition on stdin and prints {isValid, errors} (the package's documented API).
VALIDATE_JS = """
const validator = require("asl-validator");
const validate = validator.default || validator;
let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const result = validate(JSON.parse(input));
  process.stdout.write(JSON.stringify({ isValid: result.isValid, errors: result.errors }));
});
"""


def validate(where: str, definition: dict[str, Any]) -> list[Finding]:
    node = shutil.which("node")
    assert node, "Node.js is required (scripts/bootstrap.sh installs the npm tools with it)"
    assert VALIDATOR.is_dir(), "node_modules/asl-validator is missing: run `npm ci`"
    completed = subprocess.run(
        [node, "-e", VALIDATE_JS],
        input=json.dumps(definition),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    result = json.loads(completed.stdout)
    if result["isValid"]:
        return []
    return [
        Finding(str(error.get("Error code", "ERROR")), where, str(error.get("Message", error)))
        for error in result["errors"]
    ]


def state_machine_findings(stack: Synthesized) -> list[Finding]:
    resolver = PlausibleResolver(stack.raw)
    findings: list[Finding] = []
    machines = stack.resources("AWS::StepFunctions::StateMachine")
    assert machines, "no state machine in the template"
    for logical_id, resource in machines.items():
        text = resolver.resolve(resource["Properties"]["DefinitionString"])
        where = f"{stack.config.name}/{logical_id}/DefinitionString"
        findings.extend(validate(where, json.loads(text)))
    return findings


@pytest.fixture(scope="module")
def findings(synthesized: dict[str, Synthesized]) -> list[Finding]:
    return [finding for stack in synthesized.values() for finding in state_machine_findings(stack)]


def test_asl_validator_is_pinned_exactly() -> None:
    package = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "package-lock.json").read_text(encoding="utf-8"))
    pinned = package["devDependencies"]["asl-validator"]
    assert pinned[0].isdigit(), f"asl-validator must be an exact version, not {pinned!r}"
    assert lock["packages"]["node_modules/asl-validator"]["version"] == pinned


def test_asl_validator_rejects_a_transition_to_a_missing_state() -> None:
    # Given a task whose Next names no state (the validator is wired up and sees it)
    definition = {
        "StartAt": "ReserveInventory",
        "States": {
            "ReserveInventory": {
                "Type": "Task",
                "Resource": "arn:aws:lambda:eu-west-1:111111111111:function:reserve:live",
                "Next": "TakePaymnt",
            },
            "TakePayment": {"Type": "Succeed"},
        },
    }

    # When
    codes = {finding.finding for finding in validate("unit/Saga/DefinitionString", definition)}

    # Then
    assert "MISSING_TRANSITION_TARGET" in codes


def test_state_machine_definitions_are_valid_or_acknowledged(findings: list[Finding]) -> None:
    missing = unacknowledged(findings, load_acknowledgements("asl-validator"))
    assert not missing, "fix, or acknowledge in infra/lint_acknowledgements.yaml:\n" + "\n".join(
        map(str, missing)
    )


def test_every_asl_acknowledgement_still_matches_a_finding(findings: list[Finding]) -> None:
    leftover = stale(findings, load_acknowledgements("asl-validator"))
    assert not leftover, f"remove from infra/lint_acknowledgements.yaml: {leftover}"
