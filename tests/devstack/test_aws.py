"""LocalAws: resources made from the template, Step Functions tasks run in the workers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
from moto.sqs.models import Queue, SQSBackend, sqs_backends
from moto.utilities.utils import load_resource

from devstack.aws import _queue_attributes, _ReapingThreadList, _retention_period_check
from devstack.template import LOCAL_ACCOUNT_ID
from tests.devstack.mini_stack import FakePostgres, RunningStack, running_stack

# moto's own Queue.attributes, captured at import, before any LocalAws patches it.
_MOTO_QUEUE_ATTRIBUTES = Queue.attributes.fget  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningStack]:
    with running_stack() as running:
        yield running


def _run(stack: RunningStack, order: dict[str, Any]) -> dict[str, Any]:
    sfn = stack.aws.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.resources.state_machine_arn,
        name=f"order-{order['order_id']}",
        input=json.dumps({"order": order}),
    )["executionArn"]
    deadline = time.monotonic() + 30
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return dict(described)


def test_queues_have_the_template_properties_and_redrive_to_the_local_dlq(
    stack: RunningStack,
) -> None:
    res = stack.resources
    attrs = stack.aws.client("sqs").get_queue_attributes(
        QueueUrl=res.orders_queue_url, AttributeNames=["All"]
    )["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": res.queue_arns["OrdersDlq"],
        "maxReceiveCount": 3,
    }
    assert res.orders_dlq_url == res.queue_urls["OrdersDlq"]
    assert res.needs_attention_queue_url == res.queue_urls["AttentionQueue"]


def test_table_has_the_key_schema_and_ttl(stack: RunningStack) -> None:
    ddb = stack.aws.client("dynamodb")
    table = stack.resources.idempotency_table
    assert ddb.describe_table(TableName=table)["Table"]["KeySchema"] == [
        {"AttributeName": "id", "KeyType": "HASH"}
    ]
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == ("expiration", "ENABLED")


def test_secrets_hold_the_local_database_login_and_payment_key(stack: RunningStack) -> None:
    sm = stack.aws.client("secretsmanager")
    db = json.loads(sm.get_secret_value(SecretId=stack.resources.db_secret_arn)["SecretString"])
    pg = FakePostgres()
    assert (db["username"], db["password"], db["port"]) == (pg.user, pg.password, pg.port)
    key = sm.get_secret_value(SecretId=stack.resources.payment_key_secret_arn)["SecretString"]
    assert key == stack.aws.payment_api_key


def test_function_environment_is_the_templates_with_local_overrides_only(
    stack: RunningStack,
) -> None:
    res = stack.resources
    reserve = res.function("saga_probe.reserve").config.environment
    assert reserve["IDEMPOTENCY_TABLE"] == res.idempotency_table
    assert reserve["STAGE"] == "dev"
    # TLS as deployed (the template's verify-full), verified against the run's CA bundle.
    assert (reserve["DB_HOST"], reserve["DB_SSLMODE"], reserve["DB_AUTH"]) == (
        "127.0.0.1",
        "verify-full",
        "secret",
    )
    assert reserve["DB_SSLROOTCERT"] == FakePostgres().sslrootcert
    assert reserve["DB_SECRET_ARN"] == res.db_secret_arn
    assert reserve["AWS_ENDPOINT_URL"] == res.endpoint_url
    intake = res.function("Intake").config.environment
    assert intake["STATE_MACHINE_ARN"] == res.state_machine_arn
    assert intake["DB_SECRET_ARN"] == res.db_secret_arn  # the Ref to the attachment
    assert "DB_HOST" not in intake
    assert res.function("Release").config.environment["PAYMENT_API_URL"] == "http://127.0.0.1:9/"
    alias = stack.aws.client("lambda").get_alias(FunctionName=res.function("Api").name, Name="live")
    assert alias["AliasArn"] == res.function("Api").alias_arn


def test_saga_task_runs_in_the_worker_through_the_alias(stack: RunningStack) -> None:
    out = _run(stack, {"order_id": "ok-1"})
    assert out["status"] == "SUCCEEDED"
    assert json.loads(out["output"])["reservation"] == {
        "reserved": True,
        "attempt": 1,
        "fn": stack.resources.function("Reserve").name,
    }


def test_transient_errors_are_retried_with_capped_jittered_backoff(stack: RunningStack) -> None:
    # Given ReserveInventory fails twice with TransientError (retry: 2 s x2, cap 5 s, FULL jitter)
    stack.aws.retry_sleep.requested.clear()
    started = time.monotonic()
    out = _run(stack, {"order_id": "retry-1", "fail_times": 2})
    # Then the third attempt succeeds, the waits were requested and the run did not wait them
    assert out["status"] == "SUCCEEDED"
    assert json.loads(out["output"])["reservation"]["attempt"] == 3
    waits = stack.aws.retry_sleep.requested
    assert len(waits) == 2
    assert 0 <= waits[0] <= 2
    assert 0 <= waits[1] <= 4
    assert time.monotonic() - started < 5
    assert any("scaled x0.01" in m for m in stack.messages)


def test_business_error_compensates_and_escalates(stack: RunningStack) -> None:
    out = _run(stack, {"order_id": "oos-1", "out_of_stock": True})
    assert (out["status"], out["error"]) == ("FAILED", "OrderFailed")
    sqs = stack.aws.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=stack.resources.needs_attention_queue_url, VisibilityTimeout=0
    )["Messages"]
    assert json.loads(messages[0]["Body"])["order_id"] == "oos-1"


def test_demo_customer_token_is_a_verifiable_id_token(stack: RunningStack) -> None:
    res = stack.resources
    token = stack.aws.create_demo_customer("carol@example.com")
    jwks = jwt.PyJWKSet.from_dict(load_resource("cognitoidp/resources/jwks-public.json"))
    claims = jwt.decode(
        token,
        key=jwks[jwt.get_unverified_header(token)["kid"]],
        algorithms=["RS256"],
        audience=res.user_pool_client_id,
        issuer=f"https://cognito-idp.eu-west-1.amazonaws.com/{res.user_pool_id}",
    )
    assert (claims["token_use"], claims["email"]) == ("id", "carol@example.com")


def test_dynamodb_is_served_by_its_own_process_and_the_functions_are_pointed_at_it(
    stack: RunningStack,
) -> None:
    """Given the stack, the idempotency table lives in the second moto process (the second
    core), and every function reaches it through botocore's per-service endpoint variable.
    Fails if the endpoint is not handed to the workers (their DynamoDB calls would reach the
    main moto server, which has no such table)."""
    res = stack.resources
    ddb_url = stack.aws.endpoint_for("dynamodb")
    assert ddb_url != res.endpoint_url
    for fn in res.functions.values():
        assert fn.config.environment["AWS_ENDPOINT_URL_DYNAMODB"] == ddb_url
        assert fn.config.environment["AWS_ENDPOINT_URL"] == res.endpoint_url
    main = boto3.client(
        "dynamodb",
        endpoint_url=res.endpoint_url,
        region_name=res.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    assert res.idempotency_table not in main.list_tables()["TableNames"]
    assert res.idempotency_table in stack.aws.client("dynamodb").list_tables()["TableNames"]


def test_a_parsed_definition_is_shared_but_every_execution_keeps_its_own_state(
    stack: RunningStack,
) -> None:
    """Given the parsed-definition cache (one program for all executions), when two executions
    each use all three of ReserveInventory's retries (MaxAttempts 3), then both succeed on
    their fourth attempt. Fails if retry state leaked into the shared program: the second
    execution would find the retries used up and fail."""
    first = _run(stack, {"order_id": "cache-1", "fail_times": 3})
    second = _run(stack, {"order_id": "cache-2", "fail_times": 3})
    assert (first["status"], second["status"]) == ("SUCCEEDED", "SUCCEEDED")
    assert json.loads(first["output"])["reservation"]["attempt"] == 4
    assert json.loads(second["output"])["reservation"]["attempt"] == 4


def test_the_sqs_retention_check_reads_the_queues_retention_period(stack: RunningStack) -> None:
    """Given a queue with a 60 s MessageRetentionPeriod, the patched check (one attribute, no
    scan of the queue) says what moto's own says: a message sent 61 s ago is past retention,
    one sent now is not; and receiving from the queue goes through it. Fails if the check read
    another attribute or compared the wrong way round."""
    sqs = stack.aws.client("sqs")
    url = sqs.create_queue(
        QueueName="retention-probe", Attributes={"MessageRetentionPeriod": "60"}
    )["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    sqs.send_message(QueueUrl=url, MessageBody="fresh")
    backend = sqs_backends[LOCAL_ACCOUNT_ID][stack.resources.region]
    assert SQSBackend.is_message_valid_based_on_retention_period is _retention_period_check
    old, fresh = backend.get_queue("retention-probe")._messages
    # Sent 61 s ago: past the queue's 60 s retention.
    old.sent_timestamp = int(old.sent_timestamp or 0) - 61_000  # type: ignore[assignment]

    assert _retention_period_check(backend, "retention-probe", old) is False
    assert _retention_period_check(backend, "retention-probe", fresh) is True
    old.sent_timestamp = int(old.sent_timestamp or 0) + 61_000  # type: ignore[assignment]
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in received) == ["fresh", "old"]


def test_sqs_queue_attributes_are_moto_s_own_answers_with_one_scan(stack: RunningStack) -> None:
    """Given a queue holding 3 visible, 1 in-flight and 2 delayed messages, and a FIFO queue
    with content-based deduplication, when the patched ``Queue.attributes`` (one scan),
    ``GetQueueAttributes`` (computed once) and ``SendMessage`` (no counts) answer, then the
    answers are moto's own: the same attribute dict as moto's property, the same counts over
    the API, and a FIFO duplicate still deduplicated. Fails if the one-scan counts classified
    a message differently, or if SendMessage lost ContentBasedDeduplication."""
    original = _MOTO_QUEUE_ATTRIBUTES
    sqs = stack.aws.client("sqs")
    url = sqs.create_queue(QueueName="attributes-probe")["QueueUrl"]
    for body in ("visible", "visible", "visible", "in-flight"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=60)
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)
    queue = sqs_backends[LOCAL_ACCOUNT_ID][stack.resources.region].get_queue("attributes-probe")

    assert Queue.attributes.fget is _queue_attributes  # type: ignore[attr-defined]
    assert _queue_attributes(queue) == original(queue)
    counts = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    assert counts == {
        "ApproximateNumberOfMessages": "3",
        "ApproximateNumberOfMessagesNotVisible": "1",
        "ApproximateNumberOfMessagesDelayed": "2",
    }
    everything = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert everything == {k: str(v) for k, v in original(queue).items() if v is not None}

    fifo = sqs.create_queue(
        QueueName="attributes-probe.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for _ in range(2):
        sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")
    fifo_queue = sqs_backends[LOCAL_ACCOUNT_ID][stack.resources.region].get_queue(
        "attributes-probe.fifo"
    )
    assert len(fifo_queue._messages) == 1  # the duplicate was dropped, as moto does
    assert _queue_attributes(fifo_queue) == original(fifo_queue)


class _CaughtStarting(threading.Thread):
    """A thread as another thread's ``start()`` leaves it for a moment: its ident is set, it
    has not yet signalled that it started, so ``is_alive()`` is False and ``join()`` raises."""

    @property
    def ident(self) -> int:
        return 1


def test_the_thread_reaper_drops_finished_threads_and_skips_one_still_starting() -> None:
    """Given moto's TMP_THREADS as ``_ReapingThreadList`` holding a finished thread, a running
    one and one caught while starting, when moto registers another thread, then the finished
    one is joined and dropped, the other two are kept and the registration succeeds.

    Fails if: the reaper joins a thread that is still starting (join raises, and moto's
    StartExecution failed with its execution left RUNNING forever: seen in a 10,000-order
    chaos run), or it drops threads that have not finished."""
    release = threading.Event()
    finished = threading.Thread(target=lambda: None)
    running = threading.Thread(target=release.wait)
    finished.start()
    finished.join()
    running.start()
    starting = _CaughtStarting(target=lambda: None)
    threads = _ReapingThreadList([finished, running, starting])
    try:
        new = threading.Thread(target=lambda: None)
        threads.append(new)

        assert list(threads) == [running, starting, new]
    finally:
        release.set()
        running.join()


def test_a_long_poll_wakes_when_a_message_becomes_visible_again(stack: RunningStack) -> None:
    """Given a message received with a 1 s visibility timeout and not deleted, a long poll
    started half a second later (WaitTimeSeconds 5) returns it as soon as it is visible again
    (about 0.5 s into the poll), as SQS does; and a poll with nothing coming still waits its
    full time. Fails if the wake-up patch is lost: moto then looks again only when its 1 s wait
    step ends (about 1 s into the poll), or if the poll returns early with nothing."""
    sqs = stack.aws.client("sqs")
    url = sqs.create_queue(QueueName="long-poll-probe")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="retry me")
    first = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"]
    time.sleep(0.5)  # out of phase with moto's 1 s wait steps, which start with the poll

    started = time.monotonic()
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, VisibilityTimeout=30)
    redelivered_after = time.monotonic() - started
    started = time.monotonic()
    empty = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    empty_after = time.monotonic() - started

    assert [m["Body"] for m in first] == ["retry me"]
    assert [m["Body"] for m in again["Messages"]] == ["retry me"]
    assert 0.3 <= redelivered_after < 0.8, redelivered_after
    assert "Messages" not in empty
    assert empty_after >= 0.9, empty_after
