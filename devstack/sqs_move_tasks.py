"""SQS message move tasks for the local stack: ``StartMessageMoveTask``,
``ListMessageMoveTasks`` and ``CancelMessageMoveTask``, which moto 5.2.5 does not implement
(it answered HTTP 500, so ``orders-ops dlq redrive`` without ``--max`` failed locally;
docs/moto-notes.md).

They are added to moto's SQS request handler in this process (where ``LocalAws`` runs the
moto server that serves SQS) and behave as AWS documents them:
- the source must be a dead-letter queue (some queue's redrive policy names it), and one
  task at a time may run per source;
- the task runs in the background and moves the messages visible when it started (later
  arrivals stay: a redriven message that fails again does not loop), oldest first as SQS
  returns them, at ``MaxNumberOfMessagesPerSecond`` when given;
- each message is sent with its body and message attributes (a new message id, as in AWS),
  then deleted from the source; ``ListMessageMoveTasks`` reports RUNNING, COMPLETED,
  CANCELLED or FAILED with the approximate counts, newest task first.

One difference, announced as ``sqs-message-move-tasks``: without ``DestinationArn`` AWS sends
each message back to the queue it was dead-lettered from; moto does not record that, so the
messages go to the dead-letter queue's source queue, and a DLQ that serves several queues is
refused (this stack's DLQs serve one).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from moto.core.responses import ActionResult
from moto.sqs.exceptions import InvalidParameterValue, QueueDoesNotExist, SQSException
from moto.sqs.models import Queue, SQSBackend
from moto.sqs.responses import SQSResponse

# The three actions, under the method names moto's dispatcher looks up.
_ACTIONS: Final = ("start_message_move_task", "list_message_move_tasks", "cancel_message_move_task")
RUNNING: Final = "RUNNING"
# Received messages stay invisible this long while they are sent on and deleted; if the task
# dies they reappear in the source and nothing is lost.
_MOVE_VISIBILITY_S: Final = 60
_BATCH: Final = 10
_KEPT_PER_SOURCE: Final = 10  # ListMessageMoveTasks returns at most 10


@dataclass
class MoveTask:
    handle: str
    source_arn: str
    source: tuple[str, str]  # (account, queue name)
    destination: tuple[str, str]
    destination_arn: str | None  # as requested: None means "back to the source queue"
    rate: int | None
    to_move: int
    started_ms: int
    moved: int = 0
    status: str = RUNNING
    failure_reason: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def entry(self) -> dict[str, Any]:
        """One ``ListMessageMoveTasks`` result entry."""
        entry: dict[str, Any] = {
            "Status": self.status,
            "SourceArn": self.source_arn,
            "ApproximateNumberOfMessagesMoved": self.moved,
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started_ms,
        }
        if self.status == RUNNING:
            entry["TaskHandle"] = self.handle
        if self.destination_arn is not None:
            entry["DestinationArn"] = self.destination_arn
        if self.rate is not None:
            entry["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure_reason is not None:
            entry["FailureReason"] = self.failure_reason
        return entry


class MoveTasks:
    """Every task of this local AWS; the moving happens through an ordinary SQS client."""

    def __init__(self, sqs_client: Callable[[], Any]) -> None:
        self._sqs_client = sqs_client
        self._lock = threading.Lock()
        self._tasks: list[MoveTask] = []

    def start(
        self,
        backend: SQSBackend,
        source_arn: str,
        destination_arn: str | None,
        rate: int | None,
    ) -> str:
        source = _queue(backend, source_arn)
        sources = backend.list_dead_letter_source_queues(source.name)
        if not sources:
            raise InvalidParameterValue("Source queue must be configured as a Dead Letter Queue.")
        if destination_arn is not None:
            destination = _queue(backend, destination_arn)
        elif len(sources) == 1:
            destination = sources[0]
        else:
            raise SQSException(
                "UnsupportedOperation",
                f"local stack: {source.name} is the dead-letter queue of {len(sources)} queues "
                "and moto does not record which one each message came from; pass "
                "DestinationArn (AWS sends each message back to its own source queue)",
            )
        if rate is not None and not 1 <= rate <= 500:
            raise InvalidParameterValue("MaxNumberOfMessagesPerSecond must be 1 to 500.")
        with self._lock:
            if any(t.source_arn == source_arn and t.status == RUNNING for t in self._tasks):
                raise SQSException(
                    "UnsupportedOperation",
                    "There is already a task running. Only one active task is allowed for a "
                    "source queue arn at a given time.",
                )
            task = MoveTask(
                handle=_task_handle(source_arn),
                source_arn=source_arn,
                source=(source.account_id, source.name),
                destination=(destination.account_id, destination.name),
                destination_arn=destination_arn,
                rate=rate,
                to_move=source.approximate_number_of_messages,
                started_ms=int(time.time() * 1000),
            )
            self._tasks.append(task)
            task.thread = threading.Thread(
                target=self._run, args=(task,), name=f"sqs-move-{source.name}", daemon=True
            )
            task.thread.start()
        return task.handle

    def list(self, source_arn: str, max_results: int) -> list[dict[str, Any]]:
        with self._lock:
            mine = [t for t in self._tasks if t.source_arn == source_arn]
            return [t.entry() for t in reversed(mine[-_KEPT_PER_SOURCE:])][:max_results]

    def cancel(self, handle: str) -> int:
        with self._lock:
            task = next((t for t in self._tasks if t.handle == handle), None)
        if task is None or task.status != RUNNING:
            raise SQSException("ResourceNotFoundException", "Task does not exist.")
        task.cancel.set()
        if task.thread is not None:
            task.thread.join(timeout=30)
        return task.moved

    def stop(self) -> None:
        """Cancel whatever still runs (the stack is stopping)."""
        with self._lock:
            running = [t for t in self._tasks if t.status == RUNNING]
        for task in running:
            task.cancel.set()
        for task in running:
            if task.thread is not None:
                task.thread.join(timeout=10)

    def _run(self, task: MoveTask) -> None:
        try:
            sqs = self._sqs_client()
            source_url = _url(sqs, task.source)
            destination_url = _url(sqs, task.destination)
            self._move(task, sqs, source_url, destination_url)
        except Exception as error:  # noqa: BLE001 - reported as the task's FailureReason
            task.failure_reason = f"{type(error).__name__}: {error}"[:1024]
            task.status = "FAILED"
            return
        task.status = "CANCELLED" if task.cancel.is_set() else "COMPLETED"

    @staticmethod
    def _move(task: MoveTask, sqs: Any, source_url: str, destination_url: str) -> None:
        started = time.monotonic()
        while task.moved < task.to_move and not task.cancel.is_set():
            batch = sqs.receive_message(
                QueueUrl=source_url,
                MaxNumberOfMessages=min(_BATCH, task.to_move - task.moved),
                VisibilityTimeout=_MOVE_VISIBILITY_S,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                return
            for index, message in enumerate(batch):
                if task.rate:
                    # Never faster than the requested rate, counted from the task's start.
                    task.cancel.wait(max(0.0, started + task.moved / task.rate - time.monotonic()))
                if task.cancel.is_set():
                    _release(sqs, source_url, batch[index:])
                    return
                attributes = message.get("MessageAttributes")
                extra = {"MessageAttributes": attributes} if attributes else {}
                sqs.send_message(QueueUrl=destination_url, MessageBody=message["Body"], **extra)
                sqs.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])
                task.moved += 1


def _queue(backend: SQSBackend, arn: str) -> Queue:
    parts = arn.split(":")
    if len(parts) != 6 or parts[2] != "sqs":
        raise InvalidParameterValue(f"Invalid queue ARN: {arn}")
    try:
        return backend.get_queue(parts[5])
    except QueueDoesNotExist:
        raise SQSException(
            "ResourceNotFoundException", f"The resource that you specified ({arn}) does not exist."
        ) from None


def _url(sqs: Any, queue: tuple[str, str]) -> str:
    account, name = queue
    return str(sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"])


def _release(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ],
    )


def _task_handle(source_arn: str) -> str:
    # Opaque to callers; AWS's is base64 JSON naming the task and the source too.
    raw = json.dumps({"taskId": str(uuid.uuid4()), "sourceArn": source_arn})
    return base64.b64encode(raw.encode()).decode()


def _handlers(tasks: MoveTasks) -> dict[str, Callable[[SQSResponse], ActionResult]]:
    def start_message_move_task(self: SQSResponse) -> ActionResult:
        rate = self._get_param("MaxNumberOfMessagesPerSecond")
        handle = tasks.start(
            self.sqs_backend,
            str(self._get_param("SourceArn")),
            self._get_param("DestinationArn") or None,
            None if rate is None else int(rate),
        )
        return ActionResult({"TaskHandle": handle})

    def list_message_move_tasks(self: SQSResponse) -> ActionResult:
        max_results = int(self._get_param("MaxResults") or 1)
        if not 1 <= max_results <= _KEPT_PER_SOURCE:
            raise InvalidParameterValue("MaxResults must be 1 to 10.")
        results = tasks.list(str(self._get_param("SourceArn")), max_results)
        return ActionResult({"Results": results})

    def cancel_message_move_task(self: SQSResponse) -> ActionResult:
        moved = tasks.cancel(str(self._get_param("TaskHandle")))
        return ActionResult({"ApproximateNumberOfMessagesMoved": moved})

    return {
        "start_message_move_task": start_message_move_task,
        "list_message_move_tasks": list_message_move_tasks,
        "cancel_message_move_task": cancel_message_move_task,
    }


@contextmanager
def served(sqs_client: Callable[[], Any]) -> Iterator[MoveTasks | None]:
    """Serve the three actions from this process's moto while the block runs.

    ``sqs_client`` makes the client the tasks move messages with (the local endpoint). Yields
    None, and changes nothing, when moto already implements them (a later moto version).
    """
    if any(hasattr(SQSResponse, name) for name in _ACTIONS):
        yield None
        return
    tasks = MoveTasks(sqs_client)
    for name, handler in _handlers(tasks).items():
        setattr(SQSResponse, name, handler)
    try:
        yield tasks
    finally:
        for name in _ACTIONS:
            delattr(SQSResponse, name)
        tasks.stop()
