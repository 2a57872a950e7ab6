"""Applies the versioned migrations; run once per deploy by a CDK trigger, and by the local run."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from orders_saga.adapters.database import database
from orders_saga.adapters.migrations import apply_migrations, configure_app_role
from orders_saga.config import app_db_user, database_settings
from orders_saga.observability import logger


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    db = database()
    applied = db.run(apply_migrations)
    app_user = app_db_user()
    timeout_ms = database_settings().statement_timeout_ms
    db.run(lambda conn: configure_app_role(conn, app_user, statement_timeout_ms=timeout_ms))
    logger.info(
        "migrations applied",
        extra={"applied": applied, "app_user": app_user, "statement_timeout_ms": timeout_ms},
    )
    return {"applied": applied, "app_user": app_user, "statement_timeout_ms": timeout_ms}
