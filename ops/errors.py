"""Errors that end a command with a clear message and a documented exit code.

Exit codes (docs/operations-contract.md, "Ops CLI"): 0 ok, 1 refused or problem found,
2 usage error or a resource that does not exist. Scripts and runbooks branch on them, so
every "not found" is a 2 whatever the service that said so.
"""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2


class OpsError(Exception):
    """A failure the operator must read; ``exit_code`` says what kind."""

    exit_code: int = EXIT_PROBLEM


class UsageError(OpsError):
    """The command line cannot be acted on (missing option, ambiguous target)."""

    exit_code = EXIT_USAGE


class NotFound(OpsError):
    """A named resource (stack, queue, table, execution, order, mapping) does not exist."""

    exit_code = EXIT_USAGE
