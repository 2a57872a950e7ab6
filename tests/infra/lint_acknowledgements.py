"""The one file of acknowledged linter findings (infra/lint_acknowledgements.yaml), and the
matching both linter tests share: every finding needs an entry, every entry a finding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

ACKNOWLEDGEMENTS = Path(__file__).resolve().parents[2] / "infra" / "lint_acknowledgements.yaml"


@dataclass(frozen=True)
class Finding:
    finding: str  # the linter's id, e.g. RESOURCE_STAR
    where: str  # "<stage>/<logical id>/<document>"
    detail: str

    def __str__(self) -> str:
        return f"{self.finding} at {self.where}: {self.detail}"


@dataclass(frozen=True)
class Acknowledgement:
    finding: str
    where: str
    reason: str
    detail: str = ""

    def matches(self, finding: Finding) -> bool:
        return (
            finding.finding == self.finding
            and fnmatchcase(finding.where, self.where)
            and self.detail in finding.detail
        )


def load_acknowledgements(tool: str, path: Path = ACKNOWLEDGEMENTS) -> list[Acknowledgement]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = document[tool] or []
    acknowledgements = [Acknowledgement(**entry) for entry in entries]
    for entry in acknowledgements:
        assert entry.reason.strip(), f"{tool}: {entry.finding} at {entry.where} has no reason"
    return acknowledgements


def unacknowledged(
    findings: Iterable[Finding], acknowledgements: Sequence[Acknowledgement]
) -> list[Finding]:
    return [f for f in findings if not any(ack.matches(f) for ack in acknowledgements)]


def stale(
    findings: Sequence[Finding], acknowledgements: Iterable[Acknowledgement]
) -> list[Acknowledgement]:
    return [ack for ack in acknowledgements if not any(ack.matches(f) for f in findings)]
