"""``saga show`` / ``saga redrive`` on real saga-shaped executions (moto executes the ASL) and
real PostgreSQL rows (F08). RedriveExecution is not in moto 5.2.5: the tests answer that one
call from a botocore Stubber and assert its parameters; refusals get a stub with nothing
queued, so a redrive call they should not make fails the test.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.stub import Stubber

from devstack.postgres import PostgresSettings
from tests.fixtures import AwsResources
from tests.ops.conftest import Cli, Sagas, insert_order, stub_call

REDRIVE_DATE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def order_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def dsn(db: psycopg.Connection, migrated_postgres: PostgresSettings) -> str:
    """The conninfo with its password (``db.info.dsn`` leaves it out); ``db`` empties the tables."""
    return migrated_postgres.conninfo()


def _stub_redrive(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, *, expected_arn: str | None = None
) -> Stubber:
    if expected_arn is None:
        return stub_call(monkeypatch, cli.clients.sfn, "stepfunctions", "redrive_execution")
    return stub_call(
        monkeypatch,
        cli.clients.sfn,
        "stepfunctions",
        "redrive_execution",
        {"redriveDate": REDRIVE_DATE},
        {"executionArn": expected_arn},
    )


def _execution_arn(machine: str, order_id: str) -> str:
    return machine.replace(":stateMachine:", ":execution:") + f":order-{order_id}"


# -- show --------------------------------------------------------------------------------------


def test_F08_show_puts_execution_records_and_rows_side_by_side(
    cli: Cli, sagas: Sagas, db: psycopg.Connection, dsn: str, order_id: str
) -> None:
    # Given a saga whose refund failed after the charge, with its rows and the intake's record
    machine = sagas.run(order_id, failing=frozenset({"TakePayment", "RefundPayment"}))
    insert_order(db, order_id, status="PAID", payment="CHARGED", reserve=True)
    from orders_saga.logic.intake import start_saga_idempotency

    # The record is written by Powertools itself, as the Intake function would.
    layer = DynamoDBPersistenceLayer(table_name="test-idempotency")
    layer.configure(config=start_saga_idempotency, key_prefix="start_saga")
    started = {"execution_name": f"order-{order_id}", "already_started": False}
    layer.save_success(data={"order_id": order_id}, result=started)
    cli.flags["--state-machine-arn"] = machine

    # When
    result = cli("--json", "--db-dsn", dsn, "saga", "show", order_id)

    # Then
    assert result.code == 0, result.err
    report = result.json()
    execution = report["execution"]
    assert execution["status"] == "FAILED"
    assert execution["failed_state"] == "RefundPayment"
    assert execution["error"] == "CompensationFailed"
    assert execution["states_entered"] == [
        "ReserveInventory",
        "TakePayment",
        "RefundPayment",
        "EscalateRefundPayment",
        "CompensationFailed",
    ]
    (record,) = report["idempotency_records"]
    assert record["step"] == "start_saga"
    assert record["status"] == "COMPLETED"
    assert record["result"] == started
    database = report["database"]
    assert database["order"]["status"] == "PAID"
    assert database["payment"]["status"] == "CHARGED"
    assert [r["sku"] for r in database["reservations"]] == ["SKU-APPLE"]
    assert database["events"][0]["detail"] == {"payment_method": "***"}


def test_show_renders_a_table_without_database(cli: Cli, sagas: Sagas, order_id: str) -> None:
    cli.flags["--state-machine-arn"] = sagas.run(order_id)

    result = cli("saga", "show", order_id)

    assert result.code == 0, result.err
    assert "SUCCEEDED" in result.out
    assert "ReserveInventory -> TakePayment -> ConfirmOrder -> OrderConfirmed" in result.out
    assert "pass --db-dsn" in result.out


def test_show_unknown_order_exits_2(cli: Cli, sagas: Sagas, dsn: str, order_id: str) -> None:
    cli.flags["--state-machine-arn"] = sagas.run(str(uuid.uuid4()))

    result = cli("--db-dsn", dsn, "saga", "show", order_id)

    assert result.code == 2
    assert f"unknown order {order_id}" in result.err


def test_show_rejects_an_id_that_is_no_order_id(cli: Cli, aws: AwsResources) -> None:
    cli.flags["--state-machine-arn"] = aws.state_machine_arn

    result = cli("saga", "show", "order-123")

    assert result.code == 2
    assert "not an order id" in result.err


# -- redrive -----------------------------------------------------------------------------------


def test_F08_redrive_refused_when_a_compensation_failed_around_a_live_charge(
    cli: Cli,
    sagas: Sagas,
    db: psycopg.Connection,
    dsn: str,
    order_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the refund failed and the payment is still CHARGED
    cli.flags["--state-machine-arn"] = sagas.run(
        order_id, failing=frozenset({"TakePayment", "RefundPayment"})
    )
    insert_order(db, order_id, status="PAID", payment="CHARGED")
    stubber = _stub_redrive(cli, monkeypatch)

    # When
    result = cli("--json", "--db-dsn", dsn, "saga", "redrive", order_id)

    # Then refused, with what to do instead, and no redrive call
    assert result.code == 1
    report = result.json()
    assert "CHARGED" in report["reason"]
    assert "RefundPayment" in report["reason"]
    assert f"{order_id}:refund" in report["instead"]
    stubber.assert_no_pending_responses()


def test_F08_redrive_runs_when_the_charge_was_refunded(
    cli: Cli,
    sagas: Sagas,
    db: psycopg.Connection,
    dsn: str,
    order_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the refund succeeded and releasing the inventory failed
    machine = sagas.run(order_id, failing=frozenset({"ConfirmOrder", "ReleaseInventory"}))
    cli.flags["--state-machine-arn"] = machine
    insert_order(db, order_id, status="PAID", payment="REFUNDED", reserve=True)
    stubber = _stub_redrive(cli, monkeypatch, expected_arn=_execution_arn(machine, order_id))

    # When
    result = cli("--json", "--db-dsn", dsn, "saga", "redrive", order_id)

    # Then exactly one RedriveExecution with the order's execution ARN
    assert result.code == 0, result.err
    stubber.assert_no_pending_responses()
    report = result.json()
    assert report["redriven_from"] == "ReleaseInventory"
    assert report["redrive_date"].startswith("2026-01-02")


def test_redrive_refused_when_the_order_is_confirmed(
    cli: Cli,
    sagas: Sagas,
    db: psycopg.Connection,
    dsn: str,
    order_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli.flags["--state-machine-arn"] = sagas.run(
        order_id, failing=frozenset({"ConfirmOrder"}), uncaught=frozenset({"ConfirmOrder"})
    )
    insert_order(db, order_id, status="CONFIRMED", payment="CHARGED")
    stubber = _stub_redrive(cli, monkeypatch)

    result = cli("--db-dsn", dsn, "saga", "redrive", order_id)

    assert result.code == 1
    assert "CONFIRMED" in result.out
    stubber.assert_no_pending_responses()


def test_redrive_refused_after_a_business_failure(
    cli: Cli,
    sagas: Sagas,
    db: psycopg.Connection,
    dsn: str,
    order_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a declined payment, fully compensated: the execution ended in OrderFailed
    cli.flags["--state-machine-arn"] = sagas.run(order_id, failing=frozenset({"TakePayment"}))
    insert_order(db, order_id, status="FAILED")
    _stub_redrive(cli, monkeypatch)

    result = cli("--db-dsn", dsn, "saga", "redrive", order_id)

    assert result.code == 1
    assert "OrderFailed" in result.out


def test_redrive_refused_without_database_unless_forced(
    cli: Cli, sagas: Sagas, order_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a forward step failed without a catch (an uncaught error stops the execution)
    machine = sagas.run(
        order_id, failing=frozenset({"ConfirmOrder"}), uncaught=frozenset({"ConfirmOrder"})
    )
    cli.flags["--state-machine-arn"] = machine
    monkeypatch.delenv("ORDERS_OPS_DB_DSN", raising=False)
    stubber = _stub_redrive(cli, monkeypatch, expected_arn=_execution_arn(machine, order_id))

    # When / Then: refused without evidence ...
    refused = cli("saga", "redrive", order_id)
    assert refused.code == 1
    assert "--db-dsn" in refused.out

    # ... and redriven from the failed step with --force
    forced = cli("--json", "saga", "redrive", order_id, "--force")
    assert forced.code == 0, forced.err
    assert forced.json()["redriven_from"] == "ConfirmOrder"
    assert forced.json()["forced_without_database"] is True
    stubber.assert_no_pending_responses()


def test_redrive_refused_for_a_succeeded_execution(
    cli: Cli,
    sagas: Sagas,
    db: psycopg.Connection,
    dsn: str,
    order_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cli.flags["--state-machine-arn"] = sagas.run(order_id)
    _stub_redrive(cli, monkeypatch)

    result = cli("--json", "--db-dsn", dsn, "saga", "redrive", order_id, "--force")

    assert result.code == 1
    assert result.json()["status"] == "SUCCEEDED"


def test_redrive_refused_while_running(
    cli: Cli, aws: AwsResources, order_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto without execute_state_machine leaves every execution RUNNING.
    import boto3

    boto3.client("stepfunctions").start_execution(
        stateMachineArn=aws.state_machine_arn, name=f"order-{order_id}", input="{}"
    )
    cli.flags["--state-machine-arn"] = aws.state_machine_arn
    _stub_redrive(cli, monkeypatch)

    result = cli("saga", "redrive", order_id, "--force")

    assert result.code == 1
    assert "still running" in result.out


def test_redrive_unknown_order_exits_2(cli: Cli, aws: AwsResources, order_id: str) -> None:
    cli.flags["--state-machine-arn"] = aws.state_machine_arn

    result = cli("saga", "redrive", order_id)

    assert result.code == 2
    assert f"unknown order {order_id}" in result.err
