"""The failure matrix (docs/failure-matrix.yaml) is complete and every reference in it holds.

Each catalogue row must name real containment code, collected tests, alarms that exist in the
synthesized dev and prod templates and link the row's runbook, and the runbook itself. The
README's table is generated from the file. The resolver's own tests below feed it broken
copies of the matrix, so a resolver that accepts anything fails here too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import failure_matrix
from infra.catalogue import CATALOGUE
from infra.failure_matrix import MatrixError, Row
from tests.infra.conftest import Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]
CATALOGUE_FILE = REPO_ROOT.parent / "shared" / "CATALOGUE.md"


@pytest.fixture(scope="module")
def rows() -> dict[str, Row]:
    return failure_matrix.load()


@pytest.fixture(scope="module")
def collected(rows: dict[str, Row], request: pytest.FixtureRequest) -> list[str]:
    """Node ids pytest collects from the modules the matrix names: this session's own
    collection when it covered them all (the full suite), else a child ``--collect-only``."""
    files = failure_matrix.test_files(rows)
    in_session = [item.nodeid for item in request.session.items]
    if {node.split("::", 1)[0] for node in in_session} >= set(files):
        return in_session
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *files,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.fixture(scope="module")
def templates(synthesized: dict[str, Synthesized]) -> dict[str, dict[str, Any]]:
    return {stage: synth.raw for stage, synth in synthesized.items()}


def test_matrix_has_exactly_one_complete_row_per_catalogue_id(rows: dict[str, Row]) -> None:
    """Given the catalogue (infra/catalogue.py, and ../shared/CATALOGUE.md when present),
    then the matrix has one row per ID, each with every cell filled (load() refuses empty
    cells) and a detect cell that names an alarm or, for F15 only, the synth guardrail."""
    assert list(rows) == sorted(CATALOGUE)
    if CATALOGUE_FILE.exists():
        listed = {
            line.split("|")[1].strip()
            for line in CATALOGUE_FILE.read_text(encoding="utf-8").splitlines()
            if line.startswith("| F")
        }
        assert listed == set(rows)
    guardrail_only = {row.id for row in rows.values() if not row.alarms}
    assert guardrail_only == {"F15"}, "F15 has no stream mapping to alarm on (operations contract)"


def test_every_reference_in_the_matrix_resolves(
    rows: dict[str, Row], collected: list[str], templates: dict[str, dict[str, Any]]
) -> None:
    """Given the matrix, the repository, the collected tests and both synthesized stages,
    then no contain/prove/detect/respond reference dangles."""
    assert collected, "pytest collected nothing: the collection itself is broken"
    assert failure_matrix.problems(rows, templates=templates, collected=collected) == []


def test_every_row_is_proved_by_its_own_catalogue_module(rows: dict[str, Row]) -> None:
    """Each row names at least one test written for it, in tests/catalogue/test_<id>_*.py, so a
    row cannot be 'proved' only by tests written for something else."""
    unproved = [
        row.id
        for row in rows.values()
        if not any(node.startswith(f"tests/catalogue/test_{row.id.lower()}_") for node in row.prove)
    ]
    assert unproved == []


def test_readme_table_is_generated_from_the_matrix(rows: dict[str, Row]) -> None:
    """Given README.md, then its failure-matrix block is exactly the rendering of the file.

    Fix a failure with: .venv/bin/python -m infra.failure_matrix --write
    """
    readme = failure_matrix.README_FILE.read_text(encoding="utf-8")
    assert failure_matrix.with_table(readme, failure_matrix.render_table(rows)) == readme


# --------------------------------------------------------------------------- the resolver


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(failure_matrix.MATRIX_FILE.read_text(encoding="utf-8"))
    return raw


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda raw: raw.pop("F07"), "missing ['F07']"),
        (lambda raw: raw.update(F99=raw["F01"]), "unknown ['F99']"),
        (lambda raw: raw["F02"].update(prove=[]), "F02.prove: a non-empty list"),
        (lambda raw: raw["F03"].update(contain=[" "]), "F03.contain: every entry"),
        (lambda raw: raw["F04"].update(detect={}), "F04.detect"),
        (lambda raw: raw["F05"].pop("respond"), "F05: keys must be exactly"),
        (lambda raw: raw["F06"].update(respond=""), "F06.respond"),
    ],
)
def test_load_refuses_a_missing_row_or_an_empty_cell(break_it: Any, message: str) -> None:
    raw = _raw()
    break_it(raw)
    with pytest.raises(MatrixError, match=message.replace("[", r"\[").replace("]", r"\]")):
        failure_matrix.parse(yaml.safe_dump(raw))


def test_resolver_reports_every_kind_of_dangling_reference(
    rows: dict[str, Row], templates: dict[str, dict[str, Any]]
) -> None:
    """Given a copy of the matrix with one dangling reference of each kind, then problems()
    names each of them, and nothing else."""
    broken = dict(rows)
    f01, f15 = rows["F01"], rows["F15"]
    broken["F01"] = Row(
        id="F01",
        failure=f01.failure,
        summary=f01.summary,
        contain=(
            "functions/orders_saga/idempotency.py::no_such_symbol",
            "functions/orders_saga/no_such_file.py::idempotent",
            "infra/stack.py::ServiceStack.no_such_method",
        ),
        prove=("tests/e2e/test_order_saga.py::test_that_does_not_exist",),
        alarms=("F01-no-such-alarm", "F02-intake-dlq-not-empty"),
        guardrail=None,
        respond="runbooks/F02-poison-message.md",
    )
    broken["F15"] = Row(
        id="F15",
        failure=f15.failure,
        summary=f15.summary,
        contain=f15.contain,
        prove=f15.prove,
        alarms=(),
        guardrail="infra/guardrails.py::queue_has_dead_letter_queue",  # a rule, but not F15's
        respond=f15.respond,
    )
    found = failure_matrix.problems(
        broken, templates=templates, collected=_all_listed(rows), root=REPO_ROOT
    )
    expected_fragments = [
        "does not define 'no_such_symbol'",
        "no file functions/orders_saga/no_such_file.py",
        "does not define 'ServiceStack.no_such_method'",
        "test_that_does_not_exist: not collected",
        "no alarm F01-no-such-alarm in the dev template",
        "no alarm F01-no-such-alarm in the prod template",
        "alarm F02-intake-dlq-not-empty is not named for F01",
        "alarm F02-intake-dlq-not-empty (dev) does not link",
        "alarm F02-intake-dlq-not-empty (prod) does not link",
        "is not the row's runbook",
        "queue_has_dead_letter_queue is not a RULES entry reporting F15",
    ]
    for fragment in expected_fragments:
        assert any(fragment in problem for problem in found), (fragment, found)
    assert len(found) == len(expected_fragments), found


def _all_listed(rows: dict[str, Row]) -> list[str]:
    return [node for row in rows.values() for node in row.prove]


def test_parametrized_tests_may_be_listed_without_their_parameters() -> None:
    collected = ["tests/x.py::test_a[2]", "tests/x.py::test_a[5]", "tests/x.py::test_ab"]
    assert failure_matrix.node_id_problem("tests/x.py::test_a", collected) is None
    assert failure_matrix.node_id_problem("tests/x.py::test_ab", collected) is None
    assert failure_matrix.node_id_problem("tests/x.py::test_", collected) is not None


def test_python_symbols_are_found_by_parsing_not_by_text() -> None:
    source = "X: int = 1\nclass A:\n    def m(self) -> None:\n        y = 'B'\n"
    assert failure_matrix.python_symbol_exists(source, "X")
    assert failure_matrix.python_symbol_exists(source, "A.m")
    assert not failure_matrix.python_symbol_exists(source, "B")  # only a string literal
    assert not failure_matrix.python_symbol_exists(source, "A.y")  # local, not a member
    assert not failure_matrix.python_symbol_exists(source, "X.m")
