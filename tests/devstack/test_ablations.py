"""The ablation switches themselves (devstack/ablations.py): each one changes what it names.

The end-to-end proof that each one matters is tests/e2e/test_ablations.py; here, cheaply,
that a key switches its containment off (in a fresh worker-like interpreter, since the
patches rebind module globals) and that the stack-level ones rewrite what they say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack import ablations as abl
from devstack.ablations import ABLATIONS, BY_KEY, ablate_definition, parse, worker_keys
from devstack.compare import REPORT_FILE, load_outcomes, render_table, with_readme_table
from infra.catalogue import CATALOGUE

CATALOGUE_IDS = set(CATALOGUE)

REPO_ROOT = Path(__file__).resolve().parents[2]
_DEFINITION = {
    "StartAt": "ReserveInventory",
    "States": {
        "ReserveInventory": {
            "Type": "Task",
            "Next": "TakePayment",
            "Retry": [
                {
                    "ErrorEquals": ["TransientError"],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 3,
                    "BackoffRate": 2,
                    "MaxDelaySeconds": 8,
                    "JitterStrategy": "FULL",
                }
            ],
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "ReleaseInventory"}],
        },
        "TakePayment": {
            "Type": "Task",
            "End": True,
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "RefundPayment"}],
        },
    },
}


def test_every_key_is_catalogue_id_and_short_name_and_switches_something() -> None:
    worker_side = set(abl._WORKER_PATCHES)
    for ablation in ABLATIONS:
        assert ablation.catalogue_id in CATALOGUE_IDS, ablation.key
        assert ablation.key in worker_side or ablation.stack, ablation.key
        assert (ablation.key in worker_side) == bool(ablation.functions), ablation.key
        assert bool(ablation.protects) != bool(ablation.argued), ablation.key
        assert any(ablation.faults.values()), f"{ablation.key} injects no fault"


def test_parse_refuses_an_unknown_key_and_all_means_every_one() -> None:
    assert parse(["all"]) == frozenset(BY_KEY)
    with pytest.raises(ValueError, match="unknown ablation 'F99-nothing'"):
        parse(["F99-nothing"])


def test_only_the_functions_a_patch_touches_get_it() -> None:
    keys = parse(["F09-provider-idempotency-key", "F01-api-idempotency"])
    assert worker_keys(keys, "take_payment") == {"F09-provider-idempotency-key"}
    assert worker_keys(keys, "api") == {"F01-api-idempotency"}
    assert worker_keys(keys, "confirm_order") == frozenset()


def test_the_retry_ablation_removes_jitter_and_bounds_and_keeps_the_errors() -> None:
    hardened = json.dumps(_DEFINITION)
    (retrier,) = json.loads(ablate_definition(hardened, {"F03-retry-bounds"}))["States"][
        "ReserveInventory"
    ]["Retry"]
    assert retrier == {
        "ErrorEquals": ["TransientError"],
        "IntervalSeconds": 1,
        "MaxAttempts": 20,
        "BackoffRate": 1,
    }
    assert json.loads(ablate_definition(hardened, set())) == _DEFINITION


def test_the_compensation_ablation_sends_every_catch_straight_to_mark_failed() -> None:
    states = json.loads(ablate_definition(json.dumps(_DEFINITION), {"F08-compensation"}))["States"]
    assert [c["Next"] for s in states.values() for c in s.get("Catch", [])] == [
        "MarkOrderFailed",
        "MarkOrderFailed",
    ]


_PROBE = """
import json
from devstack.ablations import install_from_environment
keys = install_from_environment()
from orders_saga.adapters import messaging, orders_repository
from orders_saga.logic import intake, place_order
print(json.dumps({
    "keys": sorted(keys),
    "take_stock": orders_repository.TAKE_STOCK,
    "execution_name": messaging.execution_name_for("o-1"),
    "place_order_payload": place_order.place_order_idempotency.payload_validation_jmespath,
    "intake_is_wrapped": hasattr(intake._start_once, "__wrapped__"),
}))
"""


def probe(keys: str) -> dict[str, object]:
    env = {
        **os.environ,
        abl.ABLATIONS_ENV: keys,
        "PYTHONPATH": f"{REPO_ROOT / 'functions'}{os.pathsep}{REPO_ROOT}",
        "IDEMPOTENCY_TABLE": "probe",
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_in_a_worker_the_keys_patch_the_names_the_handlers_bind() -> None:
    hardened = probe("")
    assert hardened["keys"] == []
    assert "available >= %(quantity)s" in str(hardened["take_stock"])
    assert hardened["execution_name"] == "order-o-1"
    assert hardened["place_order_payload"] == "request"
    assert hardened["intake_is_wrapped"] is True

    ablated = probe(
        "F10-stock-guards,F01-execution-name,F01-payload-validation,F01-intake-idempotency"
    )
    assert "available >=" not in str(ablated["take_stock"])
    assert str(ablated["execution_name"]).startswith("order-o-1-")
    assert ablated["place_order_payload"] == ""
    assert ablated["intake_is_wrapped"] is False


def test_every_containment_is_proven_in_the_stored_results_or_argued_in_the_adr() -> None:
    """docs/ablations.json (make compare --write) has a row per switch: a proven one broke
    its invariant without the containment and nothing with it; an argued one is in ADR 0009.
    The README and docs/ablations.md show exactly those numbers."""
    outcomes = {o.name: o for o in load_outcomes()}
    assert outcomes, "docs/ablations.json is missing: run make compare"
    adr = (REPO_ROOT / abl.ADR).read_text(encoding="utf-8")
    for ablation in ABLATIONS:
        outcome = outcomes[ablation.key]
        if ablation.protects:
            assert outcome.proven, outcome
        else:
            assert f"`{ablation.key}`" in adr, f"{ablation.key} is argued nowhere in {abl.ADR}"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert with_readme_table(readme, list(outcomes.values())) == readme, "run make compare"
    assert render_table(list(outcomes.values())) in REPORT_FILE.read_text(encoding="utf-8")
