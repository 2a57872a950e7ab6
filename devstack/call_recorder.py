"""Every AWS call a function makes, as IAM sees it: the evidence for least privilege (F20).

A worker process told to record (``DEVSTACK_CALL_LOG_DIR`` names a directory, see
``devstack.lambda_runtime._worker_main``) installs a ``CallRecorder`` before the handler is
imported. From then on every botocore client the process builds (``orders_saga.aws_clients``,
and any client a library builds for itself) carries event hooks that append one JSON line per
API call to ``<dir>/<function>.<pid>.calls.jsonl``:

    {"function": ..., "action": "sqs:SendMessage", "resource": "arn:aws:sqs:...", ...}

- ``action`` is the IAM action: ``<signing name>:<operation>``, with the few operations whose
  IAM action has another name mapped (``lambda:Invoke`` is ``lambda:InvokeFunction``).
- ``resource`` is the ARN IAM authorizes the call on, derived from the parameters (QueueUrl,
  TableName, stateMachineArn, SecretId, FunctionName + Qualifier) or, for CodeDeploy's
  deployment calls, from the deployment group that ``GetDeployment`` answered. ``None`` when it
  cannot be known: an evaluator must then demand a grant on ``*`` (fail closed).
- An RDS IAM token (``orders_saga.adapters.rds_iam.auth_token``, or an RDS client's
  ``generate_db_auth_token``) makes no API call but is authorized as ``rds-db:connect`` on the
  proxy's database user; it is recorded with the host and user it signed for, because the
  proxy's resource id (what the ARN needs) is not part of its host name.

Only names of resources are written, never parameter values (message bodies, keys, secrets).
Calls are recorded when they are made (``before-parameter-build``), so a call whose process is
killed mid-flight (a timeout, a chaos kill) is still on record.

``LocalStack(call_log_dir=...)`` writes each run into its own subdirectory with a
``resources.json``: the local physical ids of that run (moto's queue URLs, secret ARNs, ...), so a
recording can be evaluated after its stack is gone (``read_recordings``).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlparse

import botocore.session

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from devstack.template import CfnTemplate, Physical

CALL_LOG_DIR_ENV: Final = "DEVSTACK_CALL_LOG_DIR"
"""Set for a worker: record into this directory. Set for ``LocalStack``: the default of its
``call_log_dir`` (each run gets a subdirectory)."""
ACCOUNT_ENV: Final = "DEVSTACK_ACCOUNT_ID"
"""Set for a recording worker: the account the local AWS serves (the template's), for the ARNs
the recorder derives."""
RESOURCES_FILE: Final = "resources.json"
CALLS_SUFFIX: Final = ".calls.jsonl"
DEFAULT_ACCOUNT_ID: Final = "123456789012"  # moto's, as devstack.template.LOCAL_ACCOUNT_ID

# Operations whose IAM action is not named like the operation (service authorization reference).
_IAM_ACTION_NAMES: Final[Mapping[tuple[str, str], str]] = {
    ("lambda", "Invoke"): "InvokeFunction",
    ("lambda", "InvokeWithResponseStream"): "InvokeFunction",
    ("sqs", "SendMessageBatch"): "SendMessage",
    ("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}
# Calls authorized on a resource only their answer names (recorded after the call).
_RESOURCE_FROM_ANSWER: Final = frozenset({("codedeploy", "GetDeployment")})
_CONTEXT_KEY: Final = "devstack_call_recorder"


@dataclass(frozen=True)
class RecordedCall:
    function: str  # the Lambda function name (AWS_LAMBDA_FUNCTION_NAME)
    action: str  # IAM action, "dynamodb:PutItem"
    resource: str | None  # the ARN IAM authorizes it on; None: unknown (needs "*")
    region: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "function": self.function,
                "action": self.action,
                "resource": self.resource,
                "region": self.region,
                "detail": dict(self.detail),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> RecordedCall:
        raw = json.loads(line)
        return cls(
            function=str(raw["function"]),
            action=str(raw["action"]),
            resource=None if raw.get("resource") is None else str(raw["resource"]),
            region=str(raw.get("region", "")),
            detail={str(k): str(v) for k, v in (raw.get("detail") or {}).items()},
        )


def iam_action(signing_name: str, operation: str) -> str:
    return f"{signing_name}:{_IAM_ACTION_NAMES.get((signing_name, operation), operation)}"


def _sqs_arn(params: Mapping[str, Any], region: str, account_id: str) -> str | None:
    url = params.get("QueueUrl")
    if isinstance(url, str):
        owner, _, queue = urlparse(url).path.strip("/").rpartition("/")
        return f"arn:aws:sqs:{region}:{owner or account_id}:{queue}"
    queue_name = params.get("QueueName")
    if isinstance(queue_name, str):
        owner = str(params.get("QueueOwnerAWSAccountId") or account_id)
        return f"arn:aws:sqs:{region}:{owner}:{queue_name}"
    return None


def _dynamodb_arn(params: Mapping[str, Any], region: str, account_id: str) -> str | None:
    table = params.get("TableName")
    if not isinstance(table, str):
        return None  # batch and transaction calls name several tables: not used here
    if table.startswith("arn:"):
        return table
    return f"arn:aws:dynamodb:{region}:{account_id}:table/{table}"


def _states_arn(params: Mapping[str, Any], region: str, account_id: str) -> str | None:
    for key in ("stateMachineArn", "executionArn", "activityArn"):
        arn = params.get(key)
        if isinstance(arn, str):
            return arn
    return None


def _secret_arn(params: Mapping[str, Any], region: str, account_id: str) -> str | None:
    secret = params.get("SecretId")
    # A secret's ARN ends in a random suffix: a bare name does not say which ARN it is.
    return secret if isinstance(secret, str) and secret.startswith("arn:") else None


def _lambda_arn(params: Mapping[str, Any], region: str, account_id: str) -> str | None:
    function = params.get("FunctionName")
    if not isinstance(function, str):
        return None
    return _function_arn(function, params.get("Qualifier"), region=region, account_id=account_id)


_RESOURCE_FROM_PARAMS: Final[Mapping[str, Callable[[Mapping[str, Any], str, str], str | None]]] = {
    "sqs": _sqs_arn,
    "dynamodb": _dynamodb_arn,
    "states": _states_arn,
    "secretsmanager": _secret_arn,
    "lambda": _lambda_arn,
}


def resource_arn(
    signing_name: str, params: Mapping[str, Any], *, region: str, account_id: str
) -> str | None:
    """The ARN a call is authorized on, from its parameters; None when they do not name it."""
    derive = _RESOURCE_FROM_PARAMS.get(signing_name)
    return None if derive is None else derive(params, region, account_id)


def _function_arn(name: str, qualifier: Any, *, region: str, account_id: str) -> str:
    """Lambda accepts a name, ``name:qualifier``, a partial ARN or a full ARN."""
    if name.startswith("arn:"):
        arn = name
    else:
        parts = name.split(":")
        if len(parts) >= 3 and parts[1] == "function":  # 123456789012:function:name[:q]
            arn = f"arn:aws:lambda:{region}:{':'.join(parts)}"
        else:
            arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
    if isinstance(qualifier, str) and qualifier and len(arn.split(":")) == 7:
        arn = f"{arn}:{qualifier}"
    return arn


def _deployment_group_arn(answer: Mapping[str, Any], *, region: str, account_id: str) -> str | None:
    info = answer.get("deploymentInfo") or {}
    app, group = info.get("applicationName"), info.get("deploymentGroupName")
    if not (isinstance(app, str) and isinstance(group, str)):
        return None
    return f"arn:aws:codedeploy:{region}:{account_id}:deploymentgroup:{app}/{group}"


class CallRecorder:
    """Appends one line per AWS call of this process to ``path`` (thread-safe, O_APPEND)."""

    def __init__(self, path: Path, *, function: str, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
        self.path = path
        self.function = function
        self.account_id = account_id
        self._lock = threading.Lock()
        self._fd = -1
        # CodeDeploy authorizes a deployment's calls on its group, which only GetDeployment's
        # answer names; the hook always reads the deployment before it reports on it.
        self._deployment_groups: dict[str, str] = {}

    def attach(self, client: BaseClient) -> None:
        """Hook one client (every client built after ``install`` is attached automatically)."""
        events = client.meta.events
        uid = f"{_CONTEXT_KEY}-{id(self)}"
        events.register("before-parameter-build", self._before, unique_id=f"{uid}-before")
        events.register("after-call", self._after, unique_id=f"{uid}-after")
        events.register("after-call-error", self._after_error, unique_id=f"{uid}-error")
        if client.meta.service_model.service_name == "rds":
            self._wrap_db_auth_token(client)

    def record(self, call: RecordedCall) -> None:
        line = (call.to_json() + "\n").encode()
        with self._lock:
            if self._fd < 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # botocore event handlers

    def _before(
        self, params: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        signing = _signing_name(model)
        region = str(context.get("client_region") or "")
        if (signing, model.name) in _RESOURCE_FROM_ANSWER:
            context[_CONTEXT_KEY] = (signing, model.name, region)
            return
        resource = resource_arn(signing, params, region=region, account_id=self.account_id)
        if signing == "codedeploy" and isinstance(params.get("deploymentId"), str):
            resource = self._deployment_groups.get(params["deploymentId"])
        self.record(RecordedCall(self.function, iam_action(signing, model.name), resource, region))

    def _after(self, parsed: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
        pending = context.pop(_CONTEXT_KEY, None)
        if pending is None:
            return
        signing, operation, region = pending
        resource = None
        if "Error" not in parsed:
            resource = _deployment_group_arn(parsed, region=region, account_id=self.account_id)
            deployment = (parsed.get("deploymentInfo") or {}).get("deploymentId")
            if resource is not None and isinstance(deployment, str):
                self._deployment_groups[deployment] = resource
        self.record(RecordedCall(self.function, iam_action(signing, operation), resource, region))

    def _after_error(self, context: dict[str, Any], **_: Any) -> None:
        pending = context.pop(_CONTEXT_KEY, None)
        if pending is not None:
            signing, operation, region = pending
            self.record(RecordedCall(self.function, iam_action(signing, operation), None, region))

    def _wrap_db_auth_token(self, client: BaseClient) -> None:
        generate: Callable[..., str] = client.generate_db_auth_token  # type: ignore[attr-defined]
        region = client.meta.region_name

        def recorded(DBHostname: str, Port: int, DBUsername: str, Region: str | None = None) -> str:
            self.record(
                RecordedCall(
                    self.function,
                    "rds-db:connect",
                    None,  # the ARN needs the proxy's resource id, which the host does not carry
                    Region or region,
                    {"db_host": DBHostname, "db_port": str(Port), "db_user": DBUsername},
                )
            )
            return generate(DBHostname=DBHostname, Port=Port, DBUsername=DBUsername, Region=Region)

        client.generate_db_auth_token = recorded  # type: ignore[attr-defined]


def _signing_name(model: Any) -> str:
    metadata = model.service_model.metadata
    return str(metadata.get("signingName") or metadata["endpointPrefix"])


# --- installing it in a process --------------------------------------------------------------

_installed: CallRecorder | None = None
_real_create_client: Callable[..., Any] | None = None
_real_auth_token: Callable[..., str] | None = None


def install(recorder: CallRecorder) -> CallRecorder:
    """Attach ``recorder`` to every botocore client created from now on, in any session."""
    global _installed, _real_create_client, _real_auth_token  # noqa: PLW0603 - undone by uninstall
    if _installed is not None:
        raise RuntimeError("a call recorder is already installed in this process")
    real = botocore.session.Session.create_client

    def create_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
        client = real(self, *args, **kwargs)
        recorder.attach(client)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    _installed, _real_create_client = recorder, real
    _real_auth_token = _record_db_auth_tokens(recorder)
    return recorder


def _record_db_auth_tokens(recorder: CallRecorder) -> Callable[..., str] | None:
    """The functions sign their RDS IAM tokens without an RDS client: record those too.
    Returns the real signer, for ``uninstall``."""
    try:
        from orders_saga.adapters import rds_iam
    except ImportError:  # not a function process (no functions/ on sys.path)
        return None
    real: Callable[..., str] = rds_iam.auth_token

    def auth_token(*, host: str, port: int, user: str, region: str) -> str:
        recorder.record(
            RecordedCall(
                recorder.function,
                "rds-db:connect",
                None,  # the ARN needs the proxy's resource id, which the host does not carry
                region,
                {"db_host": host, "db_port": str(port), "db_user": user},
            )
        )
        return real(host=host, port=port, user=user, region=region)

    rds_iam.auth_token = auth_token
    return real


def uninstall() -> None:
    global _installed, _real_create_client, _real_auth_token
    if _real_create_client is not None:
        botocore.session.Session.create_client = _real_create_client  # type: ignore[method-assign]
    if _real_auth_token is not None:
        from orders_saga.adapters import rds_iam

        rds_iam.auth_token = _real_auth_token
    if _installed is not None:
        _installed.close()
    _installed, _real_create_client, _real_auth_token = None, None, None


def install_from_environment() -> CallRecorder | None:
    """In a worker: record when ``DEVSTACK_CALL_LOG_DIR`` says where. The variable is removed
    again, so the handler sees exactly the environment the template gives it."""
    directory = os.environ.pop(CALL_LOG_DIR_ENV, "")
    account_id = os.environ.pop(ACCOUNT_ENV, "") or DEFAULT_ACCOUNT_ID
    if not directory:
        return None
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "unknown")
    path = Path(directory) / f"{function}.{os.getpid()}{CALLS_SUFFIX}"
    return install(CallRecorder(path, function=function, account_id=account_id))


# --- one recording per local stack run --------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One run's calls plus the local physical ids they refer to."""

    directory: Path
    stack_name: str
    region: str
    account_id: str
    physical: Mapping[str, tuple[str, Mapping[str, str]]]  # logical id -> (Ref, attributes)
    calls: tuple[RecordedCall, ...]

    def calls_of(self, function_name: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.function == function_name]


def start_recording(base: Path, template: CfnTemplate, physical: Mapping[str, Physical]) -> Path:
    """A fresh subdirectory of ``base`` for one stack run, with that run's ``resources.json``."""
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{template.stack_name}-", dir=base))
    manifest = {
        "stack_name": template.stack_name,
        "region": template.region,
        "account_id": template.account_id,
        "physical": {
            lid: {"ref": p.ref, "attributes": dict(p.attributes)} for lid, p in physical.items()
        },
    }
    (directory / RESOURCES_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return directory


def read_recordings(base: Path) -> list[Recording]:
    """Every run recorded under ``base`` (sorted by directory name)."""
    return [_read_recording(d) for d in sorted(base.glob(f"*/{RESOURCES_FILE}"))]


def _read_recording(manifest_path: Path) -> Recording:
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    directory = manifest_path.parent
    return Recording(
        directory=directory,
        stack_name=str(manifest["stack_name"]),
        region=str(manifest["region"]),
        account_id=str(manifest["account_id"]),
        physical={
            lid: (str(p["ref"]), {str(k): str(v) for k, v in p["attributes"].items()})
            for lid, p in manifest["physical"].items()
        },
        calls=tuple(_read_calls(directory)),
    )


def _read_calls(directory: Path) -> Iterator[RecordedCall]:
    for path in sorted(directory.glob(f"*{CALLS_SUFFIX}")):
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for index, line in enumerate(lines):
            try:
                yield RecordedCall.from_json(line)
            except ValueError:
                # A worker killed mid-write may leave one torn LAST line; anything else is a bug.
                if index != len(lines) - 1:
                    raise
