"""Logger, Tracer and Metrics, built once per execution environment and imported everywhere.

The order id is the correlation id end to end (F13): the API sets it when it derives the id,
the intake per record, every saga step from its input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from aws_lambda_powertools import Logger, Metrics, Tracer

# Service name and metrics namespace come from the environment the stack sets
# (POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE: service.yml), never from a literal
# here: a copy of this project with another namespace would otherwise emit into the old one,
# and every one of its metric alarms would stay silent (issue 13).
logger = Logger()
# No auto-patching: Powertools would patch every library X-Ray supports, importing each one
# (psycopg into the pre-traffic hook, botocore's client machinery into a database step) at
# every cold start. Each handler names the libraries it calls instead (issue 12, F04).
# PostgreSQL is not among them: the SDK's psycopg patch needs psycopg_pool, which we do not
# use (auto-patching skipped it silently); database time shows as the step's own segment.
tracer = Tracer(auto_patch=False)
metrics = Metrics()
# Issue 10, finding 5: every stage emits into the same namespace, so each business metric also
# carries the stage (the stack sets STAGE): dev's metrics never trip prod's alarms. Read at
# import with a default, so a module still imports with no environment set (smoke tests).
metrics.set_default_dimensions(stage=os.environ.get("STAGE", "unset"))


def trace_calls_to(libraries: Iterable[str]) -> None:
    """X-Ray subsegments for the calls this function makes: "botocore" (AWS), "httplib" (the
    payment provider, through urllib3)."""
    modules = tuple(libraries)
    if modules:
        tracer.patch(modules=modules)


def bind_order(order_id: str) -> None:
    """Tag every following log line of this invocation with the order id (F13)."""
    logger.set_correlation_id(order_id)
    logger.append_keys(order_id=order_id)
    tracer.put_annotation(key="order_id", value=order_id)


def unbind_order() -> None:
    """Forget the order id before the next unit of work of the same invocation (F13).

    An Intake batch handles several records in one invocation: without this, a record with no
    order of its own (a malformed message) would be logged under the previous record's order.
    """
    logger.set_correlation_id(None)
    logger.remove_keys(["order_id"])
