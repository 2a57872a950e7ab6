"""One local stack for the API contract tests, and the OpenAPI document loaded against it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.stack import LocalStack
from infra.service import this_service

ROOT = Path(__file__).resolve().parents[2]
CDK_OUT = ROOT / "cdk.out"
OPENAPI_DOC = ROOT / "docs" / "openapi.json"


@dataclass(frozen=True)
class ApiTarget:
    base_url: str
    token: str  # a demo customer's raw Cognito Id token


@pytest.fixture(scope="package")
def api_target() -> Iterator[ApiTarget]:
    if not this_service().template_path("dev").exists():
        pytest.fail("the dev template is missing: run `make synth` first")
    with LocalStack(cdk_out=CDK_OUT, say=lambda _m: None) as stack:
        yield ApiTarget(base_url=stack.api_url, token=stack.customer_token("fuzzer@example.com"))
