"""docs/aws-fidelity.md stays true: every difference the local stack makes on purpose has a
row there, every row is a difference the code knows, and what a running stack announces is
among them (issue 10: the local stack is never kinder than AWS, or the page says why)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devstack.differences import DIFFERENCES, announce, announced_keys
from tests.localstack import Running

DOC = Path(__file__).resolve().parents[2] / "docs" / "aws-fidelity.md"
_ROW_KEY = re.compile(r"^\| `([a-z0-9-]+)` \|", re.M)
# What every full local run must announce: the database path's differences above all.
ALWAYS_ANNOUNCED = {
    "local-ca",
    "pgbouncer-for-rds-proxy",
    "password-for-iam-token",
    "migrate-invoked-once",
    "retry-waits-scaled",
    "failed-record-retry-scaled",
}


def documented_keys() -> list[str]:
    return _ROW_KEY.findall(DOC.read_text(encoding="utf-8"))


def test_every_known_difference_has_exactly_one_row_and_every_row_is_known() -> None:
    """Fails if: a difference is added to devstack/differences.py without its row (what it
    risks, what covers it), or a row stays after its difference is gone."""
    keys = documented_keys()

    assert len(keys) == len(set(keys)), "a key has two rows"
    assert set(keys) == set(DIFFERENCES)


def test_an_unknown_difference_cannot_be_announced() -> None:
    said: list[str] = []

    with pytest.raises(KeyError, match="not a known local difference"):
        announce(said.append, "faster-than-aws", "nothing to see")
    announce(said.append, "local-ca", "PostgreSQL with the run's CA")

    assert said == ["PostgreSQL with the run's CA [aws-fidelity: local-ca]"]


def test_what_the_running_stack_announces_is_documented(running: Running) -> None:
    """Fails if: the local stack stops announcing one of its database differences, or
    announces one the page does not list."""
    announced = announced_keys(running.announcements)

    assert announced >= ALWAYS_ANNOUNCED, running.announcements
    assert announced <= set(documented_keys())
