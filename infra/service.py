"""The service's identity, read from ``service.yml``: the one file that names the service.

Everything that differs between this repository and a copy made from it (names, tags, where
each stage deploys, the payment provider, who gets paged, budgets) is an answer in that file;
the CDK app, the local stack, the operator CLI, the benchmarks and the tests all read it
through this module. It imports nothing from CDK, so ``ops`` and ``devstack`` can use it.

In a copy, copier writes ``service.yml`` from ``service.yml.jinja`` (``copier.yml`` asks the
questions). Keys starting with ``_`` are copier's own bookkeeping and are ignored here.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parent.parent
SERVICE_FILE: Final = ROOT / "service.yml"
STAGES: Final = ("dev", "prod")
# Where `make synth` writes each stage's cloud assembly (the Makefile's synth targets).
CDK_OUT_DIRS: Final = MappingProxyType({"dev": "cdk.out", "prod": "cdk.out.prod"})

# Resource names are "<service>-<stage>-<what>" and must fit AWS's shortest limits (alarm
# and dashboard names are generous; IAM role and Lambda names are 64): 30 leaves room.
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_SERVICE_NAME_MAX = 30
# CloudFormation: a stack name starts with a letter; "-<stage>" is appended.
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,100}$")
# CloudWatch: namespaces are ASCII without ':' and may not start with "AWS/".
_NAMESPACE = re.compile(r"^[A-Za-z0-9._/#-]{1,255}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TAG_VALUE = re.compile(r"^[\w .:/=+@-]{1,256}$")


class ServiceFileError(ValueError):
    """service.yml is missing an answer or has one AWS would refuse."""


@dataclass(frozen=True)
class StageTarget:
    """Where one stage deploys and what it talks to."""

    account: str
    region: str
    payment_api_url: str
    monthly_budget_usd: int
    alarm_emails: tuple[str, ...]


@dataclass(frozen=True)
class Service:
    name: str
    stack_name: str
    metrics_namespace: str
    owner: str
    cost_centre: str
    # Where this service's code (and so its runbooks) lives: alarm descriptions link there.
    repository_url: str
    stages: Mapping[str, StageTarget]

    def stack(self, stage: str) -> str:
        """The CloudFormation stack name of a stage, e.g. ``<stack_name>-dev``."""
        return f"{self.stack_name}-{stage}"

    def template_path(self, stage: str, root: Path = ROOT) -> Path:
        """``<root>/cdk.out[.prod]/<stack>.template.json``: the stage's synthesized template."""
        return root / CDK_OUT_DIRS[stage] / f"{self.stack(stage)}.template.json"

    def stage(self, stage: str) -> StageTarget:
        try:
            return self.stages[stage]
        except KeyError:
            raise ServiceFileError(f"no stage {stage!r}; service.yml has {STAGES}") from None


def _text(answers: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = answers.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ServiceFileError(f"service.yml: {key} must be {what}, got {value!r}")
    return value


def _positive_int(answers: Mapping[str, Any], key: str) -> int:
    value = answers.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ServiceFileError(f"service.yml: {key} must be a whole number >= 1, got {value!r}")
    return value


def _https_url(answers: Mapping[str, Any], key: str) -> str:
    value = answers.get(key)
    # F16: the payment client verifies TLS; a plain-HTTP provider would only work locally.
    if not isinstance(value, str) or not re.fullmatch(r"https://[^\s/]+(/\S*)?", value):
        raise ServiceFileError(f"service.yml: {key} must be an https:// URL, got {value!r}")
    return value.rstrip("/")


def parse(answers: Mapping[str, Any]) -> Service:
    """Validate the answers (the same rules for a hand edit and for copier's answers)."""
    name = _text(answers, "service_name", _SERVICE_NAME, "kebab-case (a-z, 0-9, -)")
    if len(name) > _SERVICE_NAME_MAX:
        raise ServiceFileError(f"service.yml: service_name longer than {_SERVICE_NAME_MAX}")
    namespace = _text(answers, "metrics_namespace", _NAMESPACE, "a CloudWatch namespace")
    if namespace.startswith("AWS/"):
        raise ServiceFileError("service.yml: metrics_namespace may not start with AWS/")
    stages = {}
    for stage in STAGES:
        email = answers.get(f"{stage}_alarm_email") or ""
        if email and not _EMAIL.fullmatch(str(email)):
            raise ServiceFileError(f"service.yml: {stage}_alarm_email is not an e-mail address")
        stages[stage] = StageTarget(
            account=_text(answers, f"{stage}_account", _ACCOUNT, "a 12-digit AWS account id"),
            region=_text(answers, f"{stage}_region", _REGION, "an AWS region, e.g. eu-west-1"),
            payment_api_url=_https_url(answers, f"{stage}_payment_api_url"),
            monthly_budget_usd=_positive_int(answers, f"{stage}_monthly_budget_usd"),
            alarm_emails=(str(email),) if email else (),
        )
    return Service(
        name=name,
        stack_name=_text(answers, "stack_name", _STACK_NAME, "letters and digits"),
        metrics_namespace=namespace,
        owner=_text(answers, "owner", _TAG_VALUE, "a tag value"),
        cost_centre=_text(answers, "cost_centre", _TAG_VALUE, "a tag value"),
        repository_url=_https_url(answers, "repository_url"),
        stages=MappingProxyType(stages),
    )


def load(path: Path = SERVICE_FILE) -> Service:
    try:
        answers = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ServiceFileError(f"{path} not found: it names the service (README)") from None
    if not isinstance(answers, dict):
        raise ServiceFileError(f"{path}: expected a mapping of answers")
    return parse(answers)


@cache
def this_service() -> Service:
    """This repository's service (read once per process)."""
    return load()


def shell_exports(stage: str, answers: Service | None = None) -> str:
    """``export SERVICE=... STAGE=... STACK=... NAMESPACE=... AWS_DEFAULT_REGION=...``: the
    names the runbooks' commands use, for ``eval "$(python -m infra.service prod)"``."""
    answers = answers or this_service()
    values = {
        "SERVICE": answers.name,
        "STAGE": stage,
        "STACK": answers.stack(stage),
        "NAMESPACE": answers.metrics_namespace,
        "AWS_DEFAULT_REGION": answers.stage(stage).region,
    }
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in values.items())


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python -m infra.service {{{'|'.join(STAGES)}}}")
    print(shell_exports(sys.argv[1]))
