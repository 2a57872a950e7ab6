"""``orders-ops`` against a running local stack's resource map (ops/local_map.py): used when
the command names no target, never when it names one, and a stale map is reported. The map
here is a fake pointing at the suite's moto server; tests/ops/test_local_stack.py runs the
same commands against the session's real local stack."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from devstack import resource_map
from ops.aws import AwsClients
from ops.cli import main
from ops.local_map import LocalStackMap
from tests.fixtures import AwsResources
from tests.ops.conftest import REGION, CliResult

STACK = "LocalStackUnderTest"


def fake_map(
    moto_server: str, aws: AwsResources, *, pid: int | None = None, dlq_url: str | None = None
) -> LocalStackMap:
    return LocalStackMap(
        pid=os.getpid() if pid is None else pid,
        started_at="2026-01-01T00:00:00+00:00",
        stack_name=STACK,
        region=REGION,
        endpoints={"default": moto_server, "dynamodb": moto_server},
        access_key_id="testing",
        secret_access_key="testing",
        outputs={
            "OrdersDlqUrl": dlq_url or aws.intake_dlq_url,
            "NeedsAttentionQueueUrl": aws.needs_attention_queue_url,
            "StateMachineArn": aws.state_machine_arn,
            "IdempotencyTableName": "test-idempotency",
        },
        api_url="http://127.0.0.1:9/dev",
    )


def orders_ops(path: Path, *argv: str) -> CliResult:
    """``orders-ops`` as an operator types it: no clients injected, only the map's path."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, local_map=path)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def no_endpoint_variables(aws: AwsResources, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's shell: the suite's AWS_ENDPOINT_URL is not there (once the moto
    resources exist: they are made through it)."""
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)


@pytest.fixture
def map_path(tmp_path: Path) -> Path:
    return tmp_path / ".devstack" / "resources.json"


def dead_letter(moto_server: str, aws: AwsResources, count: int) -> None:
    sqs = boto3.client("sqs", endpoint_url=moto_server)
    for n in range(count):
        sqs.send_message(QueueUrl=aws.intake_dlq_url, MessageBody=json.dumps({"n": n}))


@pytest.mark.usefixtures("no_endpoint_variables")
def test_without_flags_a_live_map_supplies_endpoint_credentials_and_resources(
    moto_server: str, aws: AwsResources, map_path: Path
) -> None:
    # Given a running local stack's map and two messages in its DLQ
    resource_map.write(map_path, fake_map(moto_server, aws))
    dead_letter(moto_server, aws, 2)

    # When the operator names nothing
    result = orders_ops(map_path, "--json", "dlq", "inspect", "orders-dlq")

    # Then the map's endpoint and outputs are used, and stderr says which map
    assert result.code == 0, result.err
    assert (result.json()["url"], result.json()["messages"]) == (aws.intake_dlq_url, 2)
    assert f"using the local stack {STACK}" in result.err
    assert str(map_path) in result.err


def test_each_service_gets_its_own_endpoint_from_the_map(
    moto_server: str, aws: AwsResources
) -> None:
    local = fake_map(moto_server, aws)
    local = LocalStackMap(
        **{
            **local.__dict__,
            "endpoints": {"default": moto_server, "dynamodb": "http://127.0.0.1:9"},
        }
    )

    clients = AwsClients.for_local_stack(local)

    assert clients.dynamodb.meta.endpoint_url == "http://127.0.0.1:9"
    assert clients.sqs.meta.endpoint_url == moto_server
    assert clients.region == REGION


@pytest.mark.usefixtures("no_endpoint_variables")
@pytest.mark.parametrize(
    ("target", "env"),
    [
        pytest.param("resource flag", None, id="--orders-dlq-url"),
        pytest.param("--endpoint-url", None, id="--endpoint-url"),
        pytest.param(None, "AWS_ENDPOINT_URL", id="AWS_ENDPOINT_URL"),
        pytest.param(None, "AWS_ENDPOINT_URL_SQS", id="AWS_ENDPOINT_URL_SQS"),
    ],
)
def test_a_command_that_names_a_target_never_reads_the_map(
    moto_server: str,
    aws: AwsResources,
    map_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str | None,
    env: str | None,
) -> None:
    """Fails if: a live local stack could redirect a command meant for an AWS account."""
    # Given a live map that names another queue as the DLQ
    resource_map.write(map_path, fake_map(moto_server, aws, dlq_url=aws.needs_attention_queue_url))
    argv = ["--json", "dlq", "inspect", "orders-dlq"]
    if target == "resource flag":
        argv = ["--endpoint-url", moto_server, "--orders-dlq-url", aws.intake_dlq_url, *argv]
    elif target == "--endpoint-url":
        argv = ["--endpoint-url", moto_server, *argv]
    if env is not None:
        monkeypatch.setenv(env, moto_server)

    # When
    result = orders_ops(map_path, *argv)

    # Then the map is not consulted: the flag wins, or today's error names the flag
    assert "local stack" not in result.err
    if target == "resource flag":
        assert result.code == 0, result.err
        assert result.json()["url"] == aws.intake_dlq_url
    else:
        assert result.code == 2
        assert "pass --orders-dlq-url" in result.err


@pytest.mark.usefixtures("no_endpoint_variables")
def test_a_stale_map_is_reported_and_the_command_fails_as_without_one(
    moto_server: str, aws: AwsResources, map_path: Path
) -> None:
    """Fails if: a map left by a killed `make serve` sends commands to a dead endpoint, or is
    ignored without a word."""
    # Given the map of a process that has ended
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(ended.stdout)
    resource_map.write(map_path, fake_map(moto_server, aws, pid=pid))

    # When
    result = orders_ops(map_path, "dlq", "inspect", "orders-dlq")

    # Then
    assert result.code == 2
    assert f"stale local stack map {map_path}" in result.err
    assert f"process {pid}" in result.err
    assert "pass --orders-dlq-url" in result.err


@pytest.mark.usefixtures("no_endpoint_variables")
def test_a_damaged_map_is_reported_and_ignored(map_path: Path) -> None:
    map_path.parent.mkdir(parents=True)
    map_path.write_text('{"format": 1, "pid": ', encoding="utf-8")

    result = orders_ops(map_path, "dlq", "inspect", "orders-dlq")

    assert result.code == 2
    assert f"ignoring the local stack map {map_path}" in result.err
