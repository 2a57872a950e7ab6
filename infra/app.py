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
from infra.stack import OrdersSagaStack

# Used when neither context nor the CDK CLI supplies an environment (no credentials): the
# availability zones for it are in cdk.json, so an offline synth never looks anything up.
OFFLINE_ACCOUNT = "123456789012"
OFFLINE_REGION = "eu-west-1"


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


def build_app(stage: str | None = None, *, outdir: str | None = None) -> cdk.App:
    app = cdk.App(context=_cdk_json_context(), outdir=outdir)
    name = stage or _context(app, "stage") or "dev"
    config = stage_config(name)
    account = _context(app, "account") or os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = _context(app, "region")
    if account is None:
        # No credentials: the CLI still exports a default region (us-east-1), but without an
        # account the pair is unusable; fall back to the offline pair whose AZs are in cdk.json.
        account, region = OFFLINE_ACCOUNT, region or OFFLINE_REGION
    region = region or os.environ.get("CDK_DEFAULT_REGION") or OFFLINE_REGION
    OrdersSagaStack(
        app,
        f"OrdersSaga-{config.name}",
        config=config,
        env=cdk.Environment(account=account, region=region),
        description=f"orders-saga ({config.name}): hardened order saga",
    )
    apply_guardrails(app)
    add_nag(app)
    return app
