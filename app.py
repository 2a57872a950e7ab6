#!/usr/bin/env python3
"""CDK entry point: `npx cdk synth -c stage=dev|prod` (see infra/app.py)."""

from infra.app import build_app

build_app().synth()
