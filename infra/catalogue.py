"""The failure catalogue's IDs, titles and runbooks: one place every alarm, runbook and test
refers to (``../shared/CATALOGUE.md`` is the source; IDs are stable).

Alarm names start with the ID (``F02-intake-dlq-not-empty``) and every alarm description
links its row's runbook (``runbooks/F02-poison-message.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from infra.service import this_service

# Alarm descriptions link the runbooks in the service's own repository (service.yml).
RUNBOOK_BASE_URL: Final = f"{this_service().repository_url}/blob/main/"


@dataclass(frozen=True)
class Failure:
    id: str
    slug: str
    title: str

    @property
    def runbook(self) -> str:
        """Path of the runbook inside the repository."""
        return f"runbooks/{self.id}-{self.slug}.md"

    @property
    def runbook_url(self) -> str:
        return RUNBOOK_BASE_URL + self.runbook


_ROWS = (
    Failure("F01", "duplicate-delivery", "Duplicate delivery"),
    Failure("F02", "poison-message", "Poison message"),
    Failure("F03", "retry-storm", "Retry storm"),
    Failure("F04", "cold-start-amplification", "Cold-start amplification"),
    Failure("F05", "runaway-concurrency-and-cost", "Runaway concurrency and cost"),
    Failure("F06", "db-connection-exhaustion", "Database connection exhaustion"),
    Failure("F07", "unbounded-timeouts", "Unbounded timeouts"),
    Failure("F08", "partial-failure", "Partial failure of the saga"),
    Failure("F09", "ambiguous-failure", "Ambiguous failure (side effect done, response lost)"),
    Failure("F10", "overlapping-executions", "Overlapping executions race each other"),
    Failure("F11", "bad-input", "Bad or oversized input"),
    Failure("F12", "brittle-deployments", "Brittle deployments"),
    Failure("F13", "observability-gaps", "Observability gaps"),
    Failure("F14", "secret-rotation", "Secrets expire or rotate mid-flight"),
    Failure("F15", "stream-mapping-defaults", "Event source mapping defaults"),
    Failure("F16", "runtime-drift", "Works locally, crashes in the cloud"),
    Failure("F17", "silent-data-loss", "Data silently dropped"),
    Failure("F18", "unowned-resources-and-versions", "Unowned resources and unknown versions"),
    Failure("F19", "downstream-outage", "Downstream outage cascades"),
    Failure("F20", "permission-errors", "Permission errors or roles broader than needed"),
    Failure("F21", "memory-exhaustion", "Memory exhaustion"),
    Failure("F22", "recursive-loops", "Misfires and recursive loops"),
)

CATALOGUE: Final = MappingProxyType({row.id: row for row in _ROWS})


def failure(failure_id: str) -> Failure:
    return CATALOGUE[failure_id]
