"""Applies the versioned migrations; run once per deploy by a CDK trigger, and by the local run."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga.adapters.database import database
from orders_saga.adapters.migrations import apply_migrations
from orders_saga.observability import logger


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    applied = database().run(apply_migrations)
    logger.info("migrations applied", extra={"applied": applied})
    return {"applied": applied}
