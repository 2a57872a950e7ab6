"""service.yml is the one file that names the service (issue 13).

A name written anywhere else would survive a rename silently: a copy's metrics would go to the
old namespace and its alarms never fire, its stack name would collide with ours. This test
fails for any answer found outside service.yml, in every file git knows (code, tests,
devstack, runbooks, docs), and checks that the copier questions, the template of service.yml
and service.yml itself name the same answers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.service import ROOT, SERVICE_FILE, Service, ServiceFileError, parse, this_service

COPIER_FILE = ROOT / "copier.yml"
SERVICE_TEMPLATE = ROOT / "service.yml.jinja"
# Files that hold the answers by design.
ANSWER_FILES = frozenset({"service.yml"})


def _answers() -> dict[str, Any]:
    data = yaml.safe_load(SERVICE_FILE.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def forbidden_values(service: Service) -> dict[str, str]:
    """The answers that name this service, value -> the answer's key.

    Not included: the account ids (123456789012 is also AWS's documentation account and
    moto's, which the unit tests use on purpose) and the regions (the unit tests' moto region).
    The copy test covers both: it answers other accounts and regions and still synthesizes
    and runs an order end to end.
    """
    values = {
        service.name: "service_name",
        service.stack_name: "stack_name",
        service.metrics_namespace: "metrics_namespace",
        service.owner: "owner",
        service.cost_centre: "cost_centre",
        service.repository_url: "repository_url",
    }
    for stage, target in service.stages.items():
        values[target.payment_api_url] = f"{stage}_payment_api_url"
        for email in target.alarm_emails:
            values[email] = f"{stage}_alarm_email"
    return values


def repository_files() -> list[Path]:
    """Every file git tracks or would track (new files included, ignored ones not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in sorted(set(listed.split("\0"))) if name]


def test_no_file_but_service_yml_names_the_service() -> None:
    values = forbidden_values(this_service())
    found: list[str] = []
    for path in repository_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in ANSWER_FILES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (charts)
        for number, line in enumerate(text.splitlines(), 1):
            found.extend(
                f"{relative}:{number}: {key} {value!r}"
                for value, key in values.items()
                if value in line
            )
    assert not found, "answers of service.yml written elsewhere:\n" + "\n".join(found[:40])


def test_the_scan_sees_a_name_written_into_a_new_file(tmp_path: Path) -> None:
    """The scan covers untracked files too: a name in a new module is caught before commit."""
    probe = ROOT / "tests" / "template" / "_probe_new_file.py"
    probe.write_text(f"NAMESPACE = {this_service().metrics_namespace!r}\n", encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match=r"_probe_new_file\.py:1: metrics_namespace"):
            test_no_file_but_service_yml_names_the_service()
    finally:
        probe.unlink()


@pytest.mark.skipif(not COPIER_FILE.exists(), reason="a copy has no copier.yml: it is no template")
def test_copier_asks_exactly_the_answers_service_yml_holds() -> None:
    questions = {
        k for k in yaml.safe_load(COPIER_FILE.read_text(encoding="utf-8")) if not k.startswith("_")
    }
    template_keys = {
        line.split(":", 1)[0]
        for line in SERVICE_TEMPLATE.read_text(encoding="utf-8").splitlines()
        if line[:1].isalpha() and ":" in line
    }
    assert questions == set(_answers()) == template_keys


@pytest.mark.skipif(not COPIER_FILE.exists(), reason="a copy has no copier.yml: it is no template")
def test_the_template_renders_this_service_yml_from_its_own_answers(tmp_path: Path) -> None:
    from copier import run_copy

    # copier renders only service.yml here; every other file would be copied verbatim.
    run_copy(
        str(ROOT),
        tmp_path,
        data=_answers(),
        defaults=True,
        vcs_ref="HEAD",
        exclude=["*", "!service.yml", "!service.yml.jinja"],
        quiet=True,
    )
    rendered = yaml.safe_load((tmp_path / "service.yml").read_text(encoding="utf-8"))
    assert {k: v for k, v in rendered.items() if not k.startswith("_")} == _answers()
    assert parse(rendered) == this_service()


def _with(**changes: Any) -> dict[str, Any]:
    return {**_answers(), **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"service_name": "Orders_Service"}, "service_name must be kebab-case"),
        ({"service_name": "a" * 31}, "longer than 30"),
        ({"stack_name": "1Stack"}, "stack_name must be letters and digits"),
        ({"metrics_namespace": "AWS/Lambda"}, "may not start with AWS/"),
        ({"dev_account": "12345"}, "dev_account must be a 12-digit AWS account id"),
        ({"prod_account": 123456789012}, "prod_account must be a 12-digit"),
        ({"prod_region": "europe"}, "prod_region must be an AWS region"),
        ({"dev_payment_api_url": "http://pay.example.net"}, "must be an https:// URL"),
        ({"prod_alarm_email": "nobody"}, "not an e-mail address"),
        ({"prod_monthly_budget_usd": 0}, "whole number >= 1"),
        ({"cost_centre": ""}, "cost_centre must be a tag value"),
    ],
)
def test_an_answer_aws_would_refuse_stops_synth_with_its_key(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ServiceFileError, match=message):
        parse(_with(**changes))


def test_a_missing_answer_is_named() -> None:
    answers = _answers()
    del answers["owner"]
    with pytest.raises(ServiceFileError, match="owner must be a tag value, got None"):
        parse(answers)


def test_stack_names_and_template_paths_follow_the_answers() -> None:
    other = f"{this_service().stack_name}Copy"
    service = parse(_with(stack_name=other, dev_region="ap-southeast-2"))
    assert service.stack("prod") == f"{other}-prod"
    assert service.template_path("dev", Path("/x")) == Path(f"/x/cdk.out/{other}-dev.template.json")
    assert service.stage("dev").region == "ap-southeast-2"
