"""`build_app`: one stage's app, with the guardrail and cdk-nag applied."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from infra.config import stage_config
from infra.guardrails import apply_guardrails
from infra.nag import add_nag
from infra.service import this_service
from infra.stack import ServiceStack

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def _cdk_json_context() -> dict[str, Any]:
    """cdk.json's context (feature flags, offline AZs) for apps built outside the CDK CLI
    (tests). Under the CLI the same values arrive again and take precedence."""
    try:
        context = json.loads(CDK_JSON.read_text(encoding="utf-8")).get("context", {})
    except FileNotFoundError:
        return {}
    return dict(context)


def _context(app: cdk.App, key: str) -> str | None:
    value = app.node.try_get_context(key)
    return str(value) if value else None


def _offline_availability_zones(app: cdk.App, account: str, region: str) -> None:
    """Without credentials CDK cannot look up the region's availability zones, and synth would
    stop. Offline, assume the first three letters (the VPC uses 2 AZs). With credentials the
    CLI sets CDK_DEFAULT_ACCOUNT and CDK looks the real ones up (some regions skip a letter)
    and records them in cdk.context.json: commit that file before deploying."""
    key = f"availability-zones:account={account}:region={region}"
    if os.environ.get("CDK_DEFAULT_ACCOUNT") is None and app.node.try_get_context(key) is None:
        app.node.set_context(key, [f"{region}{zone}" for zone in "abc"])


def build_app(stage: str | None = None, *, outdir: str | None = None) -> cdk.App:
    app = cdk.App(context=_cdk_json_context(), outdir=outdir)
    name = stage or _context(app, "stage") or "dev"
    config = stage_config(name)
    service = this_service()
    # The stage's account and region come from service.yml, never from whatever credentials
    # happen to be active: deploying with another account's credentials fails instead of
    # creating the stage in the wrong account.
    target = service.stage(config.name)
    _offline_availability_zones(app, target.account, target.region)
    ServiceStack(
        app,
        service.stack(config.name),
        config=config,
        env=cdk.Environment(account=target.account, region=target.region),
        description=f"{service.name} ({config.name}): hardened order saga",
    )
    apply_guardrails(app)
    add_nag(app)
    return app
