"""This repository as a copier template (issue 13): a copy with other answers is green, and
``copier update`` brings later changes into a copy without losing the copy's own edits.

The first test is the README's adoption section, run: ``copier copy`` with another service
name, namespace, account and region, then in the copy the README's two commands: ``make test``
(bootstrap, lint, synth of both stages with the guardrail inside, cfn-lint, and pytest narrowed
to the copy's own name and guardrail tests) and ``make demo`` (every order end to end through
the copy's local stack). The copy bootstraps its own ``.venv`` and ``node_modules`` from the
lock files (uv's and npm's caches make that quick), so nothing of this checkout leaks into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import run_copy, run_update

from infra.service import ROOT, this_service
from tests.template.test_service_names import repository_files


def _other_answers() -> dict[str, Any]:
    """Another service, namespace, owner, accounts and region than service.yml's. Derived from
    a digest of its name, so neither this file nor the answers contain any of service.yml's."""
    ours = this_service()
    tag = hashlib.sha256(ours.name.encode()).hexdigest()[:8]
    region = "us-east-2" if ours.stage("dev").region != "us-east-2" else "eu-central-1"
    return {
        "service_name": f"svc-{tag}",
        "stack_name": f"Svc{tag}",
        "metrics_namespace": f"Copies/Svc{tag}",
        "owner": f"team-{tag}",
        "cost_centre": f"cc-{tag}",
        "repository_url": f"https://git.example.net/svc-{tag}",
        "dev_account": "210987654321",
        "dev_region": region,
        "prod_account": "310987654321",
        "prod_region": region,
        "prod_alarm_email": f"oncall-{tag}@example.net",
    }


OTHER_ANSWERS: Mapping[str, Any] = _other_answers()
# What the suite's conftest put into this process's environment must not reach the copy:
# the copy's own conftest sets its own values.
_PARENT_ONLY = ("AWS_", "POWERTOOLS_", "MOTO_", "IDEMPOTENCY_", "PYTEST_", "VIRTUAL_ENV")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PARENT_ONLY)}
    env.pop("PYTHONPATH", None)
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.net",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.net",
    )
    return env


def _run(args: list[str], cwd: Path, timeout_s: int = 600) -> str:
    done = subprocess.run(
        args,
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{output[-4000:]}"
    return output


def _git_commit(repo: Path, message: str, tag: str | None = None) -> None:
    if not (repo / ".git").exists():
        _run(["git", "init", "-q", "-b", "main"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-q", "-m", message], repo)
    if tag:
        _run(["git", "tag", tag], repo)


def _template_snapshot(into: Path) -> Path:
    """This checkout's files as git sees them (uncommitted edits included, ignored files not),
    committed into a fresh repository: the "upstream" a copy is made from and updated from."""
    for source in repository_files():
        if source.is_file():
            target = into / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    _git_commit(into, "template v1", tag="v1.0.0")
    return into


pytestmark = pytest.mark.skipif(
    not (ROOT / "copier.yml").exists(), reason="a copy has no copier.yml: it is no template"
)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _template_snapshot(tmp_path_factory.mktemp("upstream"))


def test_a_copy_with_other_answers_passes_the_readme_commands(
    upstream: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    run_copy(str(upstream), copy, data=dict(OTHER_ANSWERS), defaults=True, quiet=True)
    _git_commit(copy, "a new service from the template")
    stack, namespace = OTHER_ANSWERS["stack_name"], OTHER_ANSWERS["metrics_namespace"]

    # Nothing in the copy names this repository's service any more.
    ours = this_service()
    if _grep_finds(copy, ours.name, ours.stack_name):
        pytest.fail(
            _run(["git", "grep", "-n", "-F", f"-e{ours.name}", f"-e{ours.stack_name}"], copy)
        )

    # The README's test command, as CI runs it (`make test`: bootstrap, ruff, mypy, synth of
    # both stages with the guardrail and cdk-nag inside, cfn-lint), with pytest narrowed to
    # the copy's own name and guardrail tests: the whole suite twice would double CI's time.
    tests = _run(
        [
            "make",
            "test",
            "PYTEST_ARGS=-p no:cacheprovider tests/template/test_service_names.py "
            "tests/infra/test_guardrails.py",
        ],
        copy,
        timeout_s=900,
    )
    assert re.search(r"\b\d+ passed", tests), tests[-3000:]
    assert " failed" not in tests, tests[-3000:]
    for stage, out in (("dev", "cdk.out"), ("prod", "cdk.out.prod")):
        manifest = json.loads((copy / out / "manifest.json").read_text())
        account = OTHER_ANSWERS[f"{stage}_account"]
        region = OTHER_ANSWERS[f"{stage}_region"]
        artifact = manifest["artifacts"][f"{stack}-{stage}"]
        assert artifact["environment"] == f"aws://{account}/{region}"
        template = (copy / out / f"{stack}-{stage}.template.json").read_text().replace(" ", "")
        assert f'"POWERTOOLS_METRICS_NAMESPACE":"{namespace}"' in template
        assert f'"Namespace":"{namespace}"' in template
        assert f"{OTHER_ANSWERS['service_name']}-{stage}-F02-intake-dlq-not-empty" in template
        for name in (ours.name, ours.metrics_namespace, ours.owner, ours.cost_centre):
            assert name not in template, f"{name!r} in the copy's {stage} template"

    # The README's other command: the whole saga through the copy's local stack, in its
    # account and region.
    demo = _run(["make", "demo"], copy)
    assert "RESULT: all invariants hold" in demo, demo[-3000:]
    assert "CONFIRMED" in demo


def _grep_finds(repo: Path, *values: str) -> bool:
    found = subprocess.run(
        ["git", "grep", "-q", "-F", *(f"-e{v}" for v in values)], cwd=repo, check=False
    )
    return found.returncode == 0


def test_copier_update_brings_upstream_changes_and_keeps_local_edits(
    upstream: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    run_copy(
        str(upstream), copy, data=dict(OTHER_ANSWERS), defaults=True, vcs_ref="v1.0.0", quiet=True
    )
    _git_commit(copy, "copy at v1")

    # The copy's own edits: a runbook line, a new module, and an answer changed by hand.
    runbook = copy / "runbooks" / "F02-poison-message.md"
    local_line = "Local escalation: page the team lead after 30 minutes."
    runbook.write_text(runbook.read_text() + f"\n{local_line}\n")
    (copy / "functions" / "orders_saga" / "logic" / "parcel_rules.py").write_text(
        '"""The copy\'s own business rule."""\n'
    )
    answers_file = copy / "service.yml"
    answers_file.write_text(
        answers_file.read_text().replace(
            "dev_monthly_budget_usd: 200", "dev_monthly_budget_usd: 250"
        )
    )
    _git_commit(copy, "local edits")

    # A later upstream release: a line in the same runbook, a new file, a changed module.
    upstream_runbook = upstream / "runbooks" / "F02-poison-message.md"
    lines = upstream_runbook.read_text().splitlines(keepends=True)
    upstream_line = "Upstream note: check the DLQ's oldest message age first.\n"
    upstream_runbook.write_text("".join([lines[0], "\n", upstream_line, *lines[1:]]))
    (upstream / "docs" / "upstream-release-note.md").write_text("# Released in v1.1.0\n")
    intake = upstream / "functions" / "orders_saga" / "logic" / "intake.py"
    intake.write_text(intake.read_text() + "\n# upstream v1.1.0\n")
    _git_commit(upstream, "template v1.1", tag="v1.1.0")

    # The README's command: `copier update -a service.yml` (copier must be told which file holds
    # the answers before it has read the template that says so).
    run_update(
        copy,
        vcs_ref="v1.1.0",
        answers_file="service.yml",
        defaults=True,
        overwrite=True,
        quiet=True,
    )

    merged = runbook.read_text()
    assert upstream_line.strip() in merged
    assert local_line in merged
    assert (copy / "docs" / "upstream-release-note.md").exists()
    assert (
        (copy / "functions" / "orders_saga" / "logic" / "intake.py")
        .read_text()
        .endswith("# upstream v1.1.0\n")
    )
    assert (copy / "functions" / "orders_saga" / "logic" / "parcel_rules.py").exists()
    answers = yaml.safe_load(answers_file.read_text())
    assert answers["service_name"] == OTHER_ANSWERS["service_name"]
    assert answers["dev_monthly_budget_usd"] == 250
    assert answers["_commit"] == "v1.1.0"
    status = _run(["git", "status", "--porcelain"], copy)
    conflicted = [line for line in status.splitlines() if line[:2] in {"UU", "AA", "DU", "UD"}]
    assert not conflicted, status
    assert not list(copy.rglob("*.rej")), "copier left rejected hunks"
    for path in (runbook, answers_file):
        assert "<<<<<<<" not in path.read_text()
