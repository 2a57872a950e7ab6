"""``orders-ops``: the operator's command line (docs/operations-contract.md, "Ops CLI").

Resources come from the stack's CloudFormation outputs (``--stack``) or explicit options
(the tests). A command that names neither, nor an endpoint, runs against the local stack of a
running ``make serve`` when its resource map is there (ops/local_map.py) and says so on
stderr; without one it fails as before, naming the flag. Exit codes: 0 ok, 1 refused or
problem found, 2 usage error or unknown resource. ``build_parser`` is public: the runbook
tests parse every command a runbook prints with it, so a runbook cannot document a command
that does not exist.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import psycopg
from botocore.exceptions import BotoCoreError, ClientError

from infra.service import this_service
from ops import dlq, intake, preflight, saga
from ops.aws import AwsClients, error_code, error_message
from ops.errors import EXIT_PROBLEM, OpsError
from ops.idempotency import load_records
from ops.local_map import DEFAULT_PATH, Lookup, find, used_note
from ops.orders_db import load_order
from ops.output import Report, emit
from ops.resources import (
    IDEMPOTENCY_TABLE,
    INTAKE_FUNCTION,
    STATE_MACHINE,
    Resources,
    explicit_from_args,
)

DSN_ENV: Final = "ORDERS_OPS_DB_DSN"

DLQ_REDRIVE_HELP: Final = """\
Move messages from a DLQ back to the queue they came from.

Without --max: one SQS StartMessageMoveTask (SQS returns every message to its original
source queue, at --rate messages per second if given) and prints the task handle.
With --max N: StartMessageMoveTask cannot stop after N messages, so this command moves at
most N itself (receive, send to the source queue, then delete), for a canary: send a few
back, watch them succeed, then redrive the rest.

Safe to repeat, and safe if a message is moved twice: the intake is idempotent per order
(F01). The needs-attention queue has no source queue and is refused: use saga redrive.
"""

PREFLIGHT_HELP: Final = """\
Check an account and region before `cdk deploy`; reads, never writes. One line per check,
ok / FAIL / note, with what to do for each FAIL; exit 1 on any FAIL:
  cdk-bootstrap               the bootstrap version the synthesized template requires
  apigateway-cloudwatch-role  the account's API Gateway CloudWatch Logs role (access logs)
  lambda-concurrency          unreserved concurrency left after the stage's reservations
  payment-api-key             the payment key secret replaced after the first deploy
  alarm-emails                infra/config.py pages a real address
  payment-api-url             infra/config.py names a real payment provider
Uses the credentials and region of the environment (AWS_PROFILE, --region).
"""

SAGA_REDRIVE_HELP: Final = """\
Redrive the order's FAILED, TIMED_OUT or ABORTED execution from its unsuccessful state.

Refused when: the execution is RUNNING or SUCCEEDED; it ended in OrderFailed (a business
failure, already compensated); the database shows the order CONFIRMED; or a payment is
CHARGED and the failure was in a compensation (a redrive would repeat compensations around
a live charge). Needs --db-dsn to decide; --force replaces the missing database evidence
only, never a refusal the database gives.
"""


def _add_global_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The same options before or after the subcommand (runbooks write them either way).

    On subcommands the defaults are SUPPRESS so an option not repeated there does not reset
    the value given before the subcommand.
    """

    def default(value: Any) -> Any:
        return value if top_level else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument("--json", action="store_true", default=default(False), help="JSON output")
    example = this_service().stack("dev")
    group.add_argument("--stack", default=default(None), help=f"stack name, e.g. {example}")
    group.add_argument("--region", default=default(None), help="AWS region")
    group.add_argument("--endpoint-url", default=default(None), help="AWS endpoint (local stack)")
    group.add_argument(
        "--db-dsn",
        default=default(None),
        help=f"PostgreSQL conninfo for read-only checks (or env {DSN_ENV})",
    )
    group.add_argument("--orders-dlq-url", default=default(None), help="instead of the stack's")
    group.add_argument(
        "--needs-attention-url", default=default(None), help="instead of the stack's"
    )
    group.add_argument("--state-machine-arn", default=default(None), help="instead of the stack's")
    group.add_argument("--intake-function", default=default(None), help="instead of the stack's")
    group.add_argument("--table", default=default(None), help="idempotency table name")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate(text: str) -> int:
    value = _positive(text)
    if value > 500:
        raise argparse.ArgumentTypeError("SQS moves at most 500 messages per second")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orders-ops",
        description="Operate the orders saga: DLQs, saga executions, the intake switch.",
        epilog="exit codes: 0 ok, 1 refused or problem found, 2 usage error or unknown resource",
    )
    _add_global_options(parser, top_level=True)
    areas = parser.add_subparsers(dest="area", required=True, metavar="{dlq,saga,intake,preflight}")

    def leaf(
        group: Any, name: str, help_text: str, description: str | None = None
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_global_options(sub, top_level=False)
        return sub

    dlq_area = areas.add_parser("dlq", help="dead-letter and needs-attention queues (F02, F08)")
    dlq_cmds = dlq_area.add_subparsers(dest="command", required=True)
    queue_help = "orders-dlq | needs-attention | a queue URL"
    inspect = leaf(
        dlq_cmds,
        "inspect",
        "count, reasons and masked samples; never deletes",
        "Count the messages, group them by reason (failure_reason attribute, or the\n"
        "failed_compensation of a needs-attention message) and print masked samples.\n"
        "Messages are read with a short visibility timeout and released at once.",
    )
    inspect.add_argument("queue", help=queue_help)
    inspect.add_argument("--samples", type=int, default=3, help="sample bodies (default 3)")
    inspect.add_argument(
        "--scan", type=int, default=100, help="messages read for the reasons (default 100)"
    )
    redrive = leaf(dlq_cmds, "redrive", "move DLQ messages back to their source", DLQ_REDRIVE_HELP)
    redrive.add_argument("queue", help=queue_help)
    redrive.add_argument("--max", type=_positive, default=None, help="move at most N (see above)")
    redrive.add_argument("--rate", type=_rate, default=None, help="messages per second (1-500)")

    saga_area = areas.add_parser("saga", help="one order's saga execution (F08)")
    saga_cmds = saga_area.add_subparsers(dest="command", required=True)
    show = leaf(
        saga_cmds,
        "show",
        "execution, the intake's idempotency record and database rows of one order",
    )
    show.add_argument("order_id")
    saga_redrive = leaf(saga_cmds, "redrive", "redrive a stopped execution", SAGA_REDRIVE_HELP)
    saga_redrive.add_argument("order_id")
    saga_redrive.add_argument(
        "--force", action="store_true", help="proceed without --db-dsn (see above)"
    )

    intake_area = areas.add_parser("intake", help="the intake switch (F19)")
    intake_cmds = intake_area.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("pause", "disable the Intake's SQS mapping: orders wait in the queue"),
        ("resume", "enable the Intake's SQS mapping again"),
        ("status", "mapping state, queue depth, oldest message age"),
    ):
        cmd = leaf(intake_cmds, name, help_text)
        cmd.add_argument("--uuid", default=None, help="the mapping, if the function has several")
        if name == "status":
            cmd.add_argument(
                "--peek",
                action="store_true",
                help="estimate the oldest age by receiving up to 10 messages when CloudWatch "
                "has no datapoint (approximate; counts as a receive toward maxReceiveCount)",
            )

    check = leaf(
        areas,
        "preflight",
        "read-only checks of an account and region before cdk deploy",
        PREFLIGHT_HELP,
    )
    check.add_argument("--stage", required=True, help="stage of infra/config.py: dev | prod")
    check.add_argument(
        "--template",
        type=Path,
        default=None,
        help="synthesized template (default: cdk.out/ or cdk.out.prod/<stack>...)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    clients: AwsClients | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    local_map: Path = DEFAULT_PATH,
) -> int:
    """Run one command. ``clients``, ``out``, ``err`` and where a running local stack's
    resource map would be (``local_map``) are injectable for tests."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # argparse has printed the usage; return its code (2) instead of leaving the process.
        return exit_.code if isinstance(exit_.code, int) else EXIT_PROBLEM
    local = _local_stack(args, local_map, err)
    if clients is None:
        clients = (
            AwsClients(region=args.region, endpoint_url=args.endpoint_url)
            if local is None or local.local is None
            else AwsClients.for_local_stack(local.local, region=args.region)
        )
    try:
        report = run(args, clients, local=local)
    except OpsError as error:
        return _fail(str(error), error.exit_code, as_json=args.json, out=out, err=err)
    except ClientError as error:
        message = f"AWS {error_code(error)}: {error_message(error)}"
        return _fail(message, EXIT_PROBLEM, as_json=args.json, out=out, err=err)
    except BotoCoreError as error:
        return _fail(f"AWS: {error}", EXIT_PROBLEM, as_json=args.json, out=out, err=err)
    except psycopg.Error as error:
        return _fail(f"database: {error}", EXIT_PROBLEM, as_json=args.json, out=out, err=err)
    emit(report, as_json=args.json, out=out)
    return report.exit_code


def _fail(message: str, code: int, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    err.write(f"orders-ops: error: {message}\n")
    if as_json:
        emit(Report({"error": message, "exit_code": code}, message, code), as_json=True, out=out)
    return code


def _names_a_target(args: argparse.Namespace) -> bool:
    """Whether the command says where to act: then a local stack map is never consulted."""
    return bool(
        args.stack
        or args.endpoint_url
        or any(explicit_from_args(args).values())
        # AWS_ENDPOINT_URL and its per-service forms (AWS_ENDPOINT_URL_DYNAMODB, ...).
        or any(name.startswith("AWS_ENDPOINT_URL") for name in os.environ)
    )


def _local_stack(args: argparse.Namespace, path: Path, err: TextIO) -> Lookup | None:
    """The running local stack's map when the command names no target; notes on stderr."""
    if args.area == "preflight" or _names_a_target(args):
        return None
    lookup = find(path)
    if lookup.local is not None:
        err.write(f"orders-ops: {used_note(lookup.local, lookup.path)}\n")
    elif lookup.note is not None:
        err.write(f"orders-ops: {lookup.note}\n")
    return lookup


def run(args: argparse.Namespace, clients: AwsClients, *, local: Lookup | None = None) -> Report:
    if args.area == "preflight":
        return preflight.preflight(
            clients, args.stage, template_path=args.template, stack=args.stack
        )
    local_map = None if local is None else local.local
    resources = Resources(
        clients,
        stack=args.stack,
        explicit=explicit_from_args(args),
        local_outputs=None if local_map is None else local_map.outputs,
        local_source=f"the local stack map {local.path}" if local else "",
    )
    if args.area == "dlq":
        queue = dlq.resolve_queue(args.queue, resources)
        if args.command == "inspect":
            return dlq.inspect(clients.sqs, queue, samples=args.samples, scan=args.scan)
        return dlq.redrive(
            clients.sqs,
            queue,
            max_messages=args.max,
            rate=args.rate,
            endpoint_url=None if local_map is None else local_map.endpoint_for("sqs"),
        )
    if args.area == "saga":
        dsn: str | None = args.db_dsn or os.environ.get(DSN_ENV) or None
        if dsn is None and local_map is not None:
            dsn = local_map.db_dsn
        return _run_saga(args, clients, resources, dsn)
    function = resources.get(INTAKE_FUNCTION)
    if args.command == "status":
        return intake.status(clients, function, uuid=args.uuid, peek_age=args.peek)
    return intake.switch(clients.lambda_, function, enable=args.command == "resume", uuid=args.uuid)


def _run_saga(
    args: argparse.Namespace, clients: AwsClients, resources: Resources, dsn: str | None
) -> Report:
    order_id = saga.check_order_id(args.order_id)
    arn = saga.execution_arn(resources.get(STATE_MACHINE), order_id)
    execution = saga.load_execution(clients.sfn, arn)
    if args.command == "redrive":
        loader = None if dsn is None else (lambda: load_order(dsn, order_id))
        return saga.redrive(
            clients.sfn,
            order_id=order_id,
            execution=execution,
            snapshot_loader=loader,
            force=args.force,
        )
    table = resources.find(IDEMPOTENCY_TABLE)
    records = None if table is None else load_records(clients.dynamodb, table, order_id)
    snapshot = None if dsn is None else load_order(dsn, order_id)
    return saga.show(
        order_id=order_id,
        execution=execution,
        records=records,
        snapshot=snapshot,
        db_checked=dsn is not None,
    )


if __name__ == "__main__":
    raise SystemExit(main())
