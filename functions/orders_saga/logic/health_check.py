"""The pre-traffic health check (F12): both of its ends.

Function side: every traffic-serving handler answers the synthetic event
``{"orders_saga_health_check": true}`` at the very top of its handler with ``health_report``:
the module imported (so the new version's code and layer load on the real runtime, F16) and
its configuration reads. It opens no database connection, calls no provider and writes
nothing, so the hook may invoke a version that is not yet receiving traffic at any time.

Hook side (``logic/pre_traffic_check.py``, so no traffic-serving function imports the hook's
CodeDeploy client and models at its cold start): CodeDeploy hands the hook only ``DeploymentId`` and
``LifecycleEventHookExecutionId``. The function and the version to test come from the
deployment's AppSpec (``GetDeployment`` -> ``revision``), which for a Lambda deployment names
``Name``, ``Alias``, ``CurrentVersion`` and ``TargetVersion``. ``pre_traffic_verdict`` invokes
``Name:TargetVersion`` (the new version, never the alias, so the check is not counted in the
alias' rollback metrics) and turns the answer into ``Succeeded`` or ``Failed``. Anything that
goes wrong on the way, including an unreadable AppSpec or an AccessDenied, is ``Failed``: a
version that cannot be shown healthy never receives traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from orders_saga.config import ConfigurationError

HEALTH_CHECK_KEY: Final = "orders_saga_health_check"

SettingReader = Callable[[], object]


def health_check_event() -> dict[str, Any]:
    return {HEALTH_CHECK_KEY: True}


def is_health_check(event: object) -> bool:
    """Only the exact marker counts, so no real event can take the dry-run path by accident."""
    return isinstance(event, Mapping) and event.get(HEALTH_CHECK_KEY) is True


def health_report(function: str, settings: Iterable[SettingReader]) -> dict[str, Any]:
    """Read each setting the function needs (environment only: no connection, no call)."""
    problems: list[str] = []
    for read in settings:
        try:
            read()
        except (ConfigurationError, ValueError) as error:
            problems.append(f"{type(error).__name__}: {error}")
    report: dict[str, Any] = {"healthy": not problems, "function": function}
    if problems:
        report["problems"] = problems
    return report
