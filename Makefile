# The README's commands. Every target bootstraps first (creates .venv and node_modules from
# the lock files when missing), so a fresh clone needs nothing else.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv/bin
CDK := node_modules/.bin/cdk
# jsii warns on every run that Node 20 is past its end of life; the pinned toolchain supports it.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export UV_PYTHON_DOWNLOADS := never
# Synth and tests never use real AWS: no credentials, no profile, no lookups.
OFFLINE := env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN

.PHONY: help bootstrap demo chaos compare bench serve synth synth-dev lint cfn-lint test clean preflight

help:
	@echo "make demo   - run the whole saga locally and print the invariant report"
	@echo "make chaos  - ORDERS (default 1000) orders with injected faults, then the invariants"
	@echo "make compare - each containment switched off, side by side with the hardened run"
	@echo "make serve  - keep the local stack up with the API on 127.0.0.1"
	@echo "make bench  - cold init, asset sizes, calls per order, cost model; docs/performance.md"
	@echo "make test   - ruff, mypy, offline cdk synth, cfn-lint, pytest (what CI runs)"
	@echo "make preflight STAGE=prod - read-only checks of your AWS account before cdk deploy"

bootstrap:
	@bash scripts/bootstrap.sh

# dev into cdk.out (what the local run builds from), prod into cdk.out.prod.
synth-dev: bootstrap
	$(OFFLINE) $(CDK) synth -q -c stage=dev --output cdk.out

synth: synth-dev
	$(OFFLINE) $(CDK) synth -q -c stage=prod --output cdk.out.prod

demo: synth-dev
	$(OFFLINE) $(VENV)/python -m devstack demo

# Fault rates and more: CHAOS_FLAGS="--payment-timeout-rate 0.01 --seed 3" (see --help).
ORDERS ?= 1000
CHAOS_FLAGS ?=
chaos: synth-dev
	$(OFFLINE) $(VENV)/python -m devstack chaos --orders $(ORDERS) $(CHAOS_FLAGS)

# Writes docs/ablations.{md,png,json}; COMPARE_FLAGS="--orders 30 --only F09-provider-idempotency-key".
COMPARE_FLAGS ?= --write
compare: synth-dev
	$(OFFLINE) $(VENV)/python -m devstack compare $(COMPARE_FLAGS)

# Prints every goal of issue 12 with its measured value and writes docs/performance.*;
# BENCH_FLAGS="--runs 5 --skip driver" for a quicker look (then without --write).
BENCH_FLAGS ?= --write
bench: synth
	$(OFFLINE) $(VENV)/python -m benchmarks $(BENCH_FLAGS)

PORT ?= 8080
serve: synth-dev
	$(OFFLINE) $(VENV)/python -m devstack serve --port $(PORT)

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

cfn-lint: synth
	$(VENV)/cfn-lint -- cdk.out/*.template.json cdk.out.prod/*.template.json

# PYTEST_ARGS narrows the run (tests/template/test_copy.py runs the copy's own checks this way).
PYTEST_ARGS ?=
test: lint cfn-lint
	$(OFFLINE) $(VENV)/python -m pytest $(PYTEST_ARGS)

# Reads the target account with YOUR credentials (AWS_PROFILE, AWS_REGION): deliberately not
# $(OFFLINE). The synth before it stays offline; it only provides the bootstrap requirement.
STAGE ?= dev
preflight: synth
	$(VENV)/python -m ops.cli preflight --stage $(STAGE)

clean:
	rm -rf cdk.out cdk.out.prod .build .pytest_cache .mypy_cache .ruff_cache
