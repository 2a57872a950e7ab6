"""The F20 call recorder (devstack/call_recorder.py): what it writes for each kind of call, in a
process and in a worker, and how recordings are read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from devstack import call_recorder
from devstack.call_recorder import (
    CALL_LOG_DIR_ENV,
    CallRecorder,
    RecordedCall,
    iam_action,
    read_recordings,
    resource_arn,
    start_recording,
)
from devstack.lambda_runtime import FunctionConfig, FunctionWorker
from devstack.template import CfnTemplate, Physical
from tests.devstack.mini_stack import HANDLERS

REGION = "eu-west-1"
ACCOUNT = "123456789012"
QUEUE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders"


def client(service: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def recorded(recorder: CallRecorder) -> list[RecordedCall]:
    return [RecordedCall.from_json(x) for x in recorder.path.read_text().splitlines()]


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[CallRecorder]:
    rec = CallRecorder(tmp_path / "fn.calls.jsonl", function="fn")
    yield rec
    rec.close()


@pytest.mark.parametrize(
    ("signing", "operation", "action"),
    [
        ("sqs", "SendMessage", "sqs:SendMessage"),
        ("sqs", "SendMessageBatch", "sqs:SendMessage"),  # one IAM action for both
        ("lambda", "Invoke", "lambda:InvokeFunction"),
        ("states", "StartExecution", "states:StartExecution"),
    ],
)
def test_iam_action_is_the_authorized_name(signing: str, operation: str, action: str) -> None:
    assert iam_action(signing, operation) == action


@pytest.mark.parametrize(
    ("signing", "params", "arn"),
    [
        ("sqs", {"QueueUrl": f"http://127.0.0.1:5000/{ACCOUNT}/orders"}, QUEUE_ARN),
        ("sqs", {"QueueUrl": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders"}, QUEUE_ARN),
        ("sqs", {"QueueName": "orders"}, QUEUE_ARN),
        ("dynamodb", {"TableName": "idem"}, f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/idem"),
        ("dynamodb", {"RequestItems": {}}, None),  # several tables: unknown, fail closed
        ("states", {"stateMachineArn": "arn:aws:states:x"}, "arn:aws:states:x"),
        (
            "secretsmanager",
            {"SecretId": "arn:aws:secretsmanager:x:1:secret:k-AbC"},
            "arn:aws:secretsmanager:x:1:secret:k-AbC",
        ),
        ("secretsmanager", {"SecretId": "k"}, None),  # a name: the ARN's suffix is unknown
        (
            "lambda",
            {"FunctionName": "api", "Qualifier": "7"},
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:api:7",
        ),
        (
            "lambda",
            {"FunctionName": "api:live"},
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:api:live",
        ),
        (
            "lambda",
            {"FunctionName": f"{ACCOUNT}:function:api"},
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:api",
        ),
        (
            "lambda",
            {"FunctionName": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:api", "Qualifier": "3"},
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:api:3",
        ),
        ("kms", {"KeyId": "k"}, None),  # a service it does not know: unknown, fail closed
    ],
)
def test_resource_is_derived_from_the_parameters(
    signing: str, params: dict[str, Any], arn: str | None
) -> None:
    assert resource_arn(signing, params, region=REGION, account_id=ACCOUNT) == arn


def test_an_attached_client_records_each_call_without_its_values(recorder: CallRecorder) -> None:
    sqs = client("sqs")
    recorder.attach(sqs)
    with Stubber(sqs) as stub:
        stub.add_response("send_message", {"MessageId": "m-1"})
        sqs.send_message(
            QueueUrl=f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders",
            MessageBody="secret body",
        )

    assert recorded(recorder) == [RecordedCall("fn", "sqs:SendMessage", QUEUE_ARN, REGION)]
    assert "secret body" not in recorder.path.read_text()


def test_codedeploy_calls_are_recorded_on_the_deployment_group(recorder: CallRecorder) -> None:
    codedeploy = client("codedeploy")
    recorder.attach(codedeploy)
    info = {"deploymentId": "d-1", "applicationName": "app", "deploymentGroupName": "group"}
    with Stubber(codedeploy) as stub:
        stub.add_response("get_deployment", {"deploymentInfo": info})
        stub.add_response("put_lifecycle_event_hook_execution_status", {})
        stub.add_response("put_lifecycle_event_hook_execution_status", {})
        codedeploy.get_deployment(deploymentId="d-1")
        for deployment in ("d-1", "d-unknown"):
            codedeploy.put_lifecycle_event_hook_execution_status(
                deploymentId=deployment, lifecycleEventHookExecutionId="e", status="Succeeded"
            )

    group = f"arn:aws:codedeploy:{REGION}:{ACCOUNT}:deploymentgroup:app/group"
    assert [(c.action, c.resource) for c in recorded(recorder)] == [
        ("codedeploy:GetDeployment", group),
        ("codedeploy:PutLifecycleEventHookExecutionStatus", group),
        # never read first: the group is unknown, so only a grant on "*" would allow it
        ("codedeploy:PutLifecycleEventHookExecutionStatus", None),
    ]


def test_an_iam_database_token_is_recorded_as_rds_db_connect(recorder: CallRecorder) -> None:
    rds = client("rds")
    recorder.attach(rds)

    token = rds.generate_db_auth_token(DBHostname="proxy.local", Port=5432, DBUsername="app")

    assert "X-Amz-Signature" in token  # still a real token
    (call,) = recorded(recorder)
    assert (call.action, call.resource) == ("rds-db:connect", None)
    assert call.detail == {"db_host": "proxy.local", "db_port": "5432", "db_user": "app"}


def test_install_attaches_every_client_created_afterwards(recorder: CallRecorder) -> None:
    call_recorder.install(recorder)
    try:
        with pytest.raises(RuntimeError):
            call_recorder.install(recorder)
        stepfunctions = client("stepfunctions")
    finally:
        call_recorder.uninstall()
    after = client("stepfunctions")
    for sfn in (stepfunctions, after):
        with Stubber(sfn) as stub:
            stub.add_response("start_execution", {"executionArn": "e", "startDate": "2025-01-01"})
            sfn.start_execution(stateMachineArn="arn:aws:states:eu-west-1:1:stateMachine:s")

    assert [c.action for c in recorded(recorder)] == ["states:StartExecution"]  # not `after`


def test_a_worker_told_to_record_records_from_init_and_hides_the_variable(tmp_path: Path) -> None:
    """The handler's client is built at import; the call is on record and the handler's
    environment does not show the recorder's variable."""
    config = FunctionConfig(
        function_name="probe",
        handler="aws_call_probe.handler",
        timeout_s=20.0,
        environment={CALL_LOG_DIR_ENV: str(tmp_path)},
        region=REGION,
        code_root=HANDLERS,
    )
    worker = FunctionWorker(config, log_sink=lambda _record: None)
    try:
        result = worker.invoke({"queue_url": f"http://127.0.0.1:1/{ACCOUNT}/orders"})
    finally:
        worker.stop()

    assert result.json() == {"recorder_variable_visible": False}
    (log,) = tmp_path.glob("probe.*.calls.jsonl")
    assert [RecordedCall.from_json(x) for x in log.read_text().splitlines()] == [
        RecordedCall("probe", "sqs:SendMessage", QUEUE_ARN, REGION)
    ]


def test_recordings_are_read_back_with_their_physical_ids(tmp_path: Path) -> None:
    template = CfnTemplate({"Resources": {}}, stack_name="S", region=REGION)
    directory = start_recording(tmp_path, template, {"Q": Physical("url", {"Arn": QUEUE_ARN})})
    call = RecordedCall("fn", "sqs:SendMessage", QUEUE_ARN, REGION)
    # A worker killed mid-write may leave a torn last line: only that one is skipped.
    (directory / "fn.1.calls.jsonl").write_text(call.to_json() + "\n" + call.to_json()[:9])

    (recording,) = read_recordings(tmp_path)

    assert recording.physical == {"Q": ("url", {"Arn": QUEUE_ARN})}
    assert (recording.stack_name, recording.region, recording.calls) == ("S", REGION, (call,))
    assert recording.calls_of("fn") == [call]
    (directory / "fn.1.calls.jsonl").write_text("{torn\n" + call.to_json() + "\n")
    with pytest.raises(json.JSONDecodeError):
        read_recordings(tmp_path)
