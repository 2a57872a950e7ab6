"""What every saga step shares: it takes the raw task input and validates it as ``SagaState``.

Every step is safe to run again, under any overlap, because its side effects are idempotent
underneath (ADR 0012): a charge or refund repeats with the same provider Idempotency-Key and
gets the original back; each database write locks the order row and returns what is already
there. That is why the steps carry no Powertools idempotency layer of their own: it protected
no invariant the ablation runs could break (ADR 0009), cost 2 DynamoDB writes per step, and
created the in-progress record a crashed attempt left behind for its retry to wait out.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from orders_saga.models import SagaState

StepFunction = Callable[..., dict[str, Any]]


def saga_step(fn: Callable[[SagaState], dict[str, Any]]) -> StepFunction:
    """Make ``fn(state)`` a step taking the raw task input as ``state=``."""

    @wraps(fn)
    def run(*, state: dict[str, Any]) -> dict[str, Any]:
        return fn(SagaState.model_validate(state))

    return run
