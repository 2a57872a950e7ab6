"""Synthesize each stage ONCE per test session; every infra and catalogue test reads the shared result.

Synthesis runs the same validation plugins as `cdk synth` (cdk-nag, the guardrail): if it
returns at all, no plugin reported an unacknowledged finding. Bundling is cached under
.build/, so after the first run this costs only the CDK synthesis itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.app import build_app
from infra.config import StageConfig, stage_config
from infra.service import this_service

STAGES = ("dev", "prod")


@dataclass(frozen=True)
class Synthesized:  # frozen, but cached_property writes to __dict__ directly
    config: StageConfig
    template: Template
    outdir: Path

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{this_service().stack(self.config.name)}.template.json"

    @cached_property
    def raw(self) -> dict[str, Any]:
        # Read once from the synthesized file: Template.to_json() crosses jsii with the whole
        # template on every call, which made each lookup cost seconds.
        template: dict[str, Any] = json.loads(self.template_path.read_text(encoding="utf-8"))
        return template

    def resources(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.raw["Resources"].items()
            if resource["Type"] == cfn_type
        }

    def validation_report(self) -> dict[str, Any]:
        path = self.outdir / "validation-report.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synthesized]:
    result: dict[str, Synthesized] = {}
    for stage in STAGES:
        outdir = tmp_path_factory.mktemp(f"cdk-{stage}")
        assembly = build_app(stage, outdir=str(outdir)).synth()
        stack = assembly.get_stack_by_name(this_service().stack(stage))
        result[stage] = Synthesized(
            config=stage_config(stage),
            template=Template.from_json(stack.template),
            outdir=outdir,
        )
    return result


@pytest.fixture(params=STAGES)
def stage_stack(request: pytest.FixtureRequest, synthesized: dict[str, Synthesized]) -> Synthesized:
    return synthesized[request.param]
