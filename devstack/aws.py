"""Local AWS: a moto server in this process, populated FROM the synthesized template.

``LocalAws`` starts ``moto.server.ThreadedMotoServer`` on a free loopback port and creates the
queues, tables, secrets, user pool, functions (+ ``live`` aliases) and state machine that
``cdk.out`` describes, with their real properties. The Lambda functions run in worker
processes (``devstack.lambda_runtime``); Step Functions tasks reach them through moto's Lambda
invoke, which this module routes to the registered invokers.

Everything that differs from AWS on purpose is in one place each and announced at start:
- ``local_overrides``: the environment variables that point the functions at local services;
- ``ScaledRetrySleep``: moto's Step Functions retry waits, scaled (and recorded for tests);
- ``_cached_sfn_client``: the interpreter's per-task boto3 client, cached (throughput only);
- ``_cached_asl_program``: a state machine's definition parsed once, not once per execution
  (throughput only: the parsed program is stateless, each execution evaluates it afresh);
- ``_cached_jsonpath``: a JSONPath of the definition (``ResultPath``, paths into the state)
  parsed once per path, not on every state of every execution: jsonpath_ng builds a new
  parser per call (~0.3 ms; a tenth of this process's CPU per order, throughput only);
- ``_cached_backend_for_host``: moto's server looks up the backend per request by listing its
  package directory and trying ~200 URL patterns; the answer per host is cached (throughput only);
- ``_retention_period_check``: moto's SQS checks each received message's retention by
  computing *all* queue attributes (three scans over every message in the queue), quadratic
  with a backlog; it reads the one attribute instead (throughput only);
- ``_queue_attributes`` / ``_get_queue_attributes`` / ``_send_message``: moto computes a queue's
  attributes with three scans over all of its messages (a clock read per message each), and
  ``GetQueueAttributes`` with N names computes them 2N+1 times; ``SendMessage`` computes them
  all to read ``ContentBasedDeduplication``. The same answers with one scan, computed once per
  ``GetQueueAttributes`` and without the counts inside ``SendMessage`` (throughput only);
- ``_wait_for_messages``: a long poll (``ReceiveMessage`` with ``WaitTimeSeconds``) in moto
  wakes up for a new message only; one whose visibility timeout or delay ran out was seen
  when the 1 s wait ended, up to 1 s late on every retry of a failed record. It also wakes
  when the next message becomes receivable, as SQS does (throughput only);
- ``devstack.moto_process.SEPARATE_SERVICES`` (DynamoDB): served by a second moto server in its
  own process, reached through ``AWS_ENDPOINT_URL_DYNAMODB``, so a second core serves it (the
  same moto code; throughput only).
- ``_ReapingThreadList``: moto's Step Functions keeps every thread it starts in TMP_THREADS and
  never joins them; their stacks stay mapped until ``vm.max_map_count`` is exhausted (a
  10,000-order run hung at ~7,700 orders). Finished threads are joined and dropped (leak fix);
- ``devstack.moto_process.KeepAliveRequestHandler``: both moto servers keep HTTP/1.1
  connections open (werkzeug's development server closes every one, so each AWS call paid a
  TCP connect and a new server thread; throughput only).
- ``TRACING_OFF_ENV`` (opt-in, ``LocalStack(tracing=False)``; the chaos run's default, its
  ``--tracing`` turns it back on): the workers run with Powertools Tracer disabled, so botocore
  is not patched by the X-Ray SDK (locally no daemon reads the segments; ~1/3 of a worker's CPU
  went into them). The demo and the end-to-end tests keep tracing on (throughput only).

Where moto is *less strict* than AWS in a way our guarantees depend on, ``devstack.moto_fidelity``
corrects it in both processes (DynamoDB item operations and SQS deletes/receives made atomic).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import boto3
import moto.awslambda.models as lambda_models
import moto.sqs.models as sqs_models
from botocore.config import Config
from moto.core.utils import camelcase_to_underscores, unix_time, unix_time_millis
from moto.moto_server import threaded_moto_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import ThreadedMotoServer
from moto.sqs.exceptions import InvalidAttributeName
from moto.stepfunctions.parser import utils as sfn_parser_utils
from moto.stepfunctions.parser.asl.component.common.path import result_path
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

# Imported so their ``boto_client_for`` is bound before _patch_moto swaps it (see there).
from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_sqs,
)
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.utils import json_path
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

from devstack.differences import announce
from devstack.lambda_runtime import DEFAULT_CODE_ROOT, FunctionConfig, Invoker
from devstack.moto_fidelity import fidelity_patches
from devstack.moto_process import (
    SEPARATE_SERVICES,
    KeepAliveRequestHandler,
    MotoProcess,
    endpoint_env_var,
)
from devstack.template import CfnTemplate, Resolver, TemplateError

_SFN_TASK_MODULES: Final = (lambda_eval_utils, state_task_service_sqs)

LOCAL_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # moto's dummy credentials
}
DEFAULT_RETRY_SLEEP_SCALE: Final = 0.01
DEFAULT_PAYMENT_API_KEY: Final = "sk_local_devstack"  # the local fake's key
TRACING_OFF_ENV: Final = {"POWERTOOLS_TRACE_DISABLED": "true"}
"""Added to every function's environment when a local run opts out of tracing (docstring)."""

Say = Callable[[str], None]


def _say_stderr(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


class ProxyEndpoint(Protocol):
    """What LocalAws needs of ``devstack.pgbouncer.ProxySettings`` (the RDS Proxy stand-in)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def dbname(self) -> str: ...
    @property
    def sslrootcert(self) -> str: ...


class PostgresSettings(ProxyEndpoint, Protocol):
    """What LocalAws needs of ``devstack.postgres.PostgresSettings``: an endpoint and a login."""

    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...


# The local secret that holds the application role's password: the stand-in for the IAM token
# a function presents to RDS Proxy (tests/catalogue/test_f20 translates reads of it back).
PROXY_LOGIN_SECRET_PREFIX: Final = "devstack/proxy-login/"  # noqa: S105 - a name prefix


@dataclass(frozen=True)
class LocalDatabase:
    """Where the local run's functions reach PostgreSQL: the instance directly (the master
    login; Migrate) and, when there is one, the local pooling proxy (the service functions)."""

    instance: PostgresSettings
    proxy: ProxyEndpoint | None = None
    # The application role's local password (AWS: an IAM token); required with a proxy.
    app_password: str | None = None


def talks_to_proxy(template: CfnTemplate, db_host: Any) -> bool:
    """Whether a template's ``DB_HOST`` names an RDS Proxy (not the DB instance itself)."""
    target = template.referenced_id(db_host)
    if target is None:
        return True  # a partial template (tests) without the proxy: only an instance is direct
    return template.resource(target).type != "AWS::RDS::DBInstance"


def local_overrides(
    template_env: Mapping[str, Any],
    *,
    database: LocalDatabase,
    db_secret_arn: str | None,
    payment_api_url: str,
    via_proxy: bool,
    proxy_login_secret_arn: str | None = None,
) -> dict[str, str]:
    """THE place where the local run's function environment differs from the template's.

    Database: the same path and settings as deployed (TLS ``verify-full``, through the proxy
    for the service functions, directly to the instance for Migrate); what differs is the host
    and port, the CA bundle (the run's CA instead of the shipped Amazon/RDS bundles) and the
    login: a password from a local secret where AWS takes an IAM token. The payment provider is
    the local fake. Only variables a function already has are overridden, so a function that
    does not talk to the database does not gain DB settings.
    """
    out: dict[str, str] = {}
    if "DB_HOST" in template_env:
        proxy = database.proxy
        if via_proxy and proxy is not None:
            out.update(
                DB_HOST=proxy.host,
                DB_PORT=str(proxy.port),
                DB_NAME=proxy.dbname,
                DB_AUTH="secret",
                DB_SSLROOTCERT=proxy.sslrootcert,
            )
            if proxy_login_secret_arn is not None:
                out["DB_SECRET_ARN"] = proxy_login_secret_arn
        else:
            pg = database.instance
            out.update(
                DB_HOST=pg.host,
                DB_PORT=str(pg.port),
                DB_NAME=pg.dbname,
                DB_USER=pg.user,
                DB_AUTH="secret",
                DB_SSLROOTCERT=pg.sslrootcert,
            )
            if db_secret_arn is not None:
                out["DB_SECRET_ARN"] = db_secret_arn
    if "PAYMENT_API_URL" in template_env:
        out["PAYMENT_API_URL"] = payment_api_url
    return out


class ScaledRetrySleep:
    """Replaces ``time.sleep`` in moto's ASL retrier: waits ``requested * scale`` and records
    every requested wait, so a test can assert the backoff (F03) without waiting for it."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.requested: list[float] = []
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.requested.append(float(seconds))
        time.sleep(max(0.0, seconds * self.scale))

    def __getattr__(self, name: str) -> Any:  # the rest of the ``time`` module, unchanged
        return getattr(time, name)


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    name: str
    arn: str
    alias_arn: str  # what callers (ESM, API, Step Functions) invoke
    version: str
    reserved_concurrency: int | None
    config: FunctionConfig


@dataclass(frozen=True)
class LocalResources:
    endpoint_url: str
    region: str
    account_id: str
    queue_urls: Mapping[str, str]  # logical id -> URL
    queue_arns: Mapping[str, str]
    orders_queue_url: str | None
    orders_dlq_url: str | None
    intake_dlq_url: str | None
    needs_attention_queue_url: str | None
    idempotency_table: str | None
    state_machine_arn: str | None
    user_pool_id: str | None
    user_pool_client_id: str | None
    db_secret_arn: str | None
    payment_key_secret_arn: str | None
    functions: Mapping[str, LocalFunction]  # logical id -> function
    aws_env: Mapping[str, str] = field(default_factory=dict)  # endpoint, credentials, region
    # SQS event source mapping logical id -> its UUID in moto (the State the poller follows)
    event_source_mappings: Mapping[str, str] = field(default_factory=dict)

    def function(self, key: str) -> LocalFunction:
        """A function by logical id, function name, handler (``orders_saga.handlers.api.handler``)
        or handler module's last part (``api``)."""
        for fn in self.functions.values():
            handler_module = fn.config.handler.rsplit(".", 1)[0]
            if key in {
                fn.logical_id,
                fn.name,
                fn.config.handler,
                handler_module.rsplit(".", 1)[-1],
            }:
                return fn
        raise KeyError(f"no local function {key!r}")


class LocalAws:
    """Context manager: moto server + resources from the template; ``__enter__`` returns the
    ``LocalResources``. One per process at a time (moto's backends are process-wide)."""

    def __init__(
        self,
        template: CfnTemplate,
        *,
        postgres: PostgresSettings,
        payment_api_url: str,
        proxy: ProxyEndpoint | None = None,
        app_password: str | None = None,
        payment_api_key: str = DEFAULT_PAYMENT_API_KEY,
        code_root: Path = DEFAULT_CODE_ROOT,
        retry_sleep_scale: float = DEFAULT_RETRY_SLEEP_SCALE,
        say: Say = _say_stderr,
    ) -> None:
        self.template = template
        self.postgres = postgres
        self.database = LocalDatabase(instance=postgres, proxy=proxy, app_password=app_password)
        # Database user -> the local secret its functions log in to the proxy with.
        self.proxy_logins: dict[str, str] = {}
        self.payment_api_url = payment_api_url
        self.payment_api_key = payment_api_key
        self.code_root = code_root
        self.retry_sleep = ScaledRetrySleep(retry_sleep_scale)
        self.say = say
        self.resolver = Resolver(template)
        self.invokers: dict[str, Invoker] = {}
        self._server: ThreadedMotoServer | None = None
        self._undo: list[Callable[[], None]] = []
        self.endpoint_url = ""
        self.service_endpoints: dict[str, str] = {}  # SEPARATE_SERVICES -> the child's URL
        self.resources: LocalResources | None = None

    # lifecycle

    def __enter__(self) -> LocalResources:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalResources:
        # The second moto process boots (imports moto) while this one starts its own server.
        # The template's account (service.yml): both moto servers serve it, so the ARNs CDK
        # baked into policies and environment variables match the local resources.
        self._set_env("MOTO_ACCOUNT_ID", self.template.account_id)
        separate = MotoProcess(_free_port())
        separate.start()
        self._undo.append(separate.stop)
        port = _free_port()
        # moto's Step Functions interpreter calls Lambda/SQS through the server at MOTO_PORT.
        self._set_env("MOTO_PORT", str(port))
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._patch(threaded_moto_server, "MotoRequestHandler", KeepAliveRequestHandler)
        self._server.start()
        self._undo.append(self._server.stop)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._quiet_moto_logs()
        self._moto_api("reset")
        # Server mode's switch for moto's ASL interpreter (mock_aws(config=...) in-process).
        self._moto_api("config", {"stepfunctions": {"execute_state_machine": True}})
        self._undo.append(
            lambda: self._moto_api("config", {"stepfunctions": {"execute_state_machine": False}})
        )
        self._patch_moto()
        separate.wait_ready()
        self.service_endpoints = dict.fromkeys(SEPARATE_SERVICES, separate.endpoint_url)
        announce(
            self.say,
            "dynamodb-own-process",
            f"moto {separate.endpoint_url} (own process, the second core): "
            f"{', '.join(SEPARATE_SERVICES)}",
        )
        self.resources = self._create_all()
        # Undone first: the DynamoDB process shuts down while this one stops its own server.
        self._undo.append(separate.request_stop)
        self.say(
            f"moto {self.endpoint_url}: resources created from {self.template.stack_name} "
            f"({self.template.region})"
        )
        return self.resources

    def stop(self) -> None:
        while self._undo:
            with contextlib.suppress(Exception):
                self._undo.pop()()
        self._server = None
        self.service_endpoints = {}

    def endpoint_for(self, service: str) -> str:
        """The local endpoint that serves ``service`` (boto3's service name)."""
        return self.service_endpoints.get(service, self.endpoint_url)

    def client(self, service: str) -> Any:
        """A boto3 client for this local AWS (the parent's own calls)."""
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_for(service),
            region_name=self.template.region,
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def route_lambda(self, function_name: str, invoker: Invoker) -> None:
        """Lambda invokes of ``function_name`` (from Step Functions) go to ``invoker``."""
        self.invokers[function_name] = invoker

    # demo users

    def create_demo_customer(self, username: str, *, password: str | None = None) -> str:
        """Create a confirmed user in the local pool and return its Id token."""
        res = self._require_resources()
        if res.user_pool_id is None or res.user_pool_client_id is None:
            raise TemplateError("the template has no Cognito user pool and client")
        idp = self.client("cognito-idp")
        password = password or f"Aa1!{secrets.token_urlsafe(16)}"
        attributes = [{"Name": "email_verified", "Value": "true"}]
        if "@" in username:
            attributes.append({"Name": "email", "Value": username})
        idp.admin_create_user(
            UserPoolId=res.user_pool_id,
            Username=username,
            MessageAction="SUPPRESS",
            UserAttributes=attributes,
        )
        idp.admin_set_user_password(
            UserPoolId=res.user_pool_id, Username=username, Password=password, Permanent=True
        )
        auth = idp.admin_initiate_auth(
            UserPoolId=res.user_pool_id,
            ClientId=res.user_pool_client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
        return str(auth["AuthenticationResult"]["IdToken"])

    # moto plumbing

    def _set_env(self, name: str, value: str) -> None:
        before = os.environ.get(name)
        os.environ[name] = value

        def restore() -> None:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before

        self._undo.append(restore)

    def _moto_api(self, action: str, body: Any = None) -> Any:
        data = json.dumps(body or {}).encode()
        url = f"{self.endpoint_url}/moto-api/{action}"
        req = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            text = resp.read()
        return json.loads(text) if text.strip().startswith(b"{") else None

    @staticmethod
    def _quiet_moto_logs() -> None:
        # werkzeug logs every request (thousands per chaos run); the ASL interpreter logs each
        # failure with a full state repr, which the execution history already records.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        logging.getLogger("moto.stepfunctions.parser.asl.component.eval_component").setLevel(
            logging.CRITICAL
        )

    def _patch_moto(self) -> None:
        # 0. AWS's atomicity where moto lacks it (devstack.moto_fidelity): not a shortcut.
        for owner, attr, value in fidelity_patches():
            self._patch(owner, attr, value)
        # 1. Lambda invokes (Step Functions tasks) run in the function's worker process.
        self._patch(lambda_models.LambdaFunction, "_invoke_lambda", self._make_invoke_lambda())
        # 2. Retry waits: scaled and recorded. The real waits are 1-60 s per retry.
        self._patch(retrier_decl, "time", self.retry_sleep)
        announce(
            self.say,
            "retry-waits-scaled",
            f"Step Functions retry waits are scaled x{self.retry_sleep.scale} "
            "(moto's retrier time.sleep patched; requested waits recorded)",
        )
        # 3. One cached client per service for the interpreter's tasks: building a boto3 client
        #    per task halves throughput (MOTO-NOTES); behaviour is unchanged.
        cached = _cached_sfn_client(self.endpoint_for)
        for name, module in list(sys.modules.items()):
            if name.startswith("moto.stepfunctions.parser") and hasattr(module, "boto_client_for"):
                self._patch(module, "boto_client_for", cached)
        # 4. The definition is parsed (ANTLR) once per state machine, not once per execution:
        #    parsing was ~40% of this process's CPU in a chaos run (py-spy).
        self._patch(ExecutionWorker, "_get_evaluation_entrypoint", _cached_asl_program())
        #    Its JSONPaths too: parsed per state evaluation otherwise (jsonpath_ng builds a new
        #    parser each time; the parsed path holds no state, finding and updating take data).
        for module in (result_path, json_path):
            self._patch(module, "parse", _cached_jsonpath(module.parse))
        # 5. moto's request router: one cached answer per host instead of a directory listing
        #    and a regex scan under a global lock on every request.
        self._patch(
            DomainDispatcherApplication,
            "get_backend_for_host",
            _cached_backend_for_host(DomainDispatcherApplication.get_backend_for_host),
        )
        # 6. SQS receive: the retention check reads one attribute, not all of them.
        self._patch(
            sqs_models.SQSBackend,
            "is_message_valid_based_on_retention_period",
            _retention_period_check,
        )
        # 7. SQS queue attributes: one scan for the three counts, once per GetQueueAttributes,
        #    none in SendMessage (which reads only ContentBasedDeduplication).
        self._patch(sqs_models.Queue, "attributes", property(_queue_attributes))
        self._patch(sqs_models.SQSBackend, "get_queue_attributes", _get_queue_attributes)
        self._patch(
            sqs_models.SQSBackend, "send_message", _send_message(sqs_models.SQSBackend.send_message)
        )
        # 7b. A long poll also wakes when a message's visibility timeout or delay runs out.
        self._patch(sqs_models.Queue, "wait_for_messages", _wait_for_messages)
        # 8. moto's Step Functions keeps every thread it starts (execution, program, each
        #    state) in a module-level TMP_THREADS list and never joins them. On Python 3.13 an
        #    unjoined thread's stack stays mapped while its object lives: ~4 stacks (2 mappings
        #    each) per order, so a 10,000-order run hit vm.max_map_count at ~7,700 orders and the
        #    next thread died in bootstrap, hanging moto's server forever (CPython gh-140746).
        #    Finished threads are now joined and dropped whenever a new one is registered.
        reaping = _ReapingThreadList(sfn_parser_utils.TMP_THREADS)
        for name, module in list(sys.modules.items()):
            if name.startswith("moto.stepfunctions.parser") and isinstance(
                getattr(module, "TMP_THREADS", None), list
            ):
                self._patch(module, "TMP_THREADS", reaping)
        announce(
            self.say,
            "moto-throughput-shortcuts",
            "moto shortcuts (throughput only): cached Step Functions clients, parsed "
            "definitions and JSONPaths, and request routing; SQS retention check and queue "
            "attributes without repeated queue scans, long polls woken when a message becomes "
            "visible again; HTTP keep-alive in both moto servers; finished Step Functions "
            "threads joined",
        )

    def _patch(self, owner: Any, attr: str, value: Any) -> None:
        before = getattr(owner, attr)
        setattr(owner, attr, value)
        self._undo.append(lambda: setattr(owner, attr, before))

    def _make_invoke_lambda(self) -> Callable[..., tuple[str, bool, str]]:
        invokers = self.invokers

        def _invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
            invoker = invokers.get(fn.function_name)
            if invoker is None:
                payload = json.dumps(
                    {
                        "errorType": "Lambda.ServiceException",
                        "errorMessage": f"devstack: no worker routed for {fn.function_name}",
                    }
                )
                return payload, True, ""
            if event == "{}":  # moto hands an empty request body over as the text "{}"
                event = {}
            result = invoker.invoke(event)
            return result.payload, result.errored, ""

        return _invoke_lambda

    def _require_resources(self) -> LocalResources:
        if self.resources is None:
            raise RuntimeError("LocalAws is not started")
        return self.resources

    # resources from the template

    def _create_all(self) -> LocalResources:
        t, r = self.template, self.resolver
        account, region = t.account_id, t.region
        self._preregister_deterministic(account, region)
        role = self.client("iam").create_role(
            RoleName="devstack-execution-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        self._create_queues()
        self._create_tables()
        env_refs = self._env_references()
        db_secret = self._create_secrets(env_refs)
        pool_id, client_id = self._create_user_pool()
        functions = self._create_functions(role, db_secret)
        machines = self._create_state_machines(role)
        mappings = self._create_event_source_mappings(functions)

        queue_urls = {q.logical_id: r.physical[q.logical_id].ref for q in t.queues()}
        queue_arns = {q.logical_id: r.physical[q.logical_id].attributes["Arn"] for q in t.queues()}
        orders_q = env_refs.get("ORDERS_QUEUE_URL")
        orders_dlq = None
        if orders_q is not None and (redrive := t.queue(orders_q).redrive) is not None:
            orders_dlq = redrive.dead_letter_queue_logical_id
        attention = self._needs_attention_queue()
        return LocalResources(
            endpoint_url=self.endpoint_url,
            region=region,
            account_id=account,
            queue_urls=queue_urls,
            queue_arns=queue_arns,
            orders_queue_url=queue_urls.get(orders_q or ""),
            orders_dlq_url=queue_urls.get(orders_dlq or ""),
            intake_dlq_url=queue_urls.get(env_refs.get("INTAKE_DLQ_URL", "")),
            needs_attention_queue_url=queue_urls.get(attention or ""),
            idempotency_table=self._ref_of(env_refs.get("IDEMPOTENCY_TABLE")),
            state_machine_arn=machines[0] if machines else None,
            user_pool_id=pool_id,
            user_pool_client_id=client_id,
            db_secret_arn=db_secret,
            payment_key_secret_arn=self._ref_of(env_refs.get("PAYMENT_API_KEY_SECRET_ARN")),
            functions=functions,
            aws_env=self._aws_env(),
            event_source_mappings=mappings,
        )

    def _aws_env(self) -> dict[str, str]:
        """What every function process needs to reach this local AWS."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **{endpoint_env_var(svc): url for svc, url in self.service_endpoints.items()},
            "AWS_DEFAULT_REGION": self.template.region,
            "AWS_REGION": self.template.region,
            **LOCAL_CREDENTIALS,
        }

    def _ref_of(self, logical_id: str | None) -> str | None:
        return None if logical_id is None else self.resolver.physical[logical_id].ref

    def _env_references(self) -> dict[str, str]:
        """Environment variable name -> the logical id its value refers to (any function)."""
        out: dict[str, str] = {}
        for fn in self.template.functions():
            for name, value in fn.environment.items():
                lid = self.template.referenced_id(value)
                if lid is not None:
                    out.setdefault(name, lid)
        return out

    def _needs_attention_queue(self) -> str | None:
        # The queue the state machine itself writes to (its escalation path, F08).
        for sm in self.template.resources("AWS::StepFunctions::StateMachine"):
            definition = sm.properties.get("DefinitionString", sm.properties.get("Definition"))
            for lid in self.template.referenced_ids(definition):
                if self.template.resource(lid).type == "AWS::SQS::Queue":
                    return lid
        return None

    def _preregister_deterministic(self, account: str, region: str) -> None:
        """Functions, aliases and state machines refer to each other (Intake needs the state
        machine's ARN, the state machine needs the aliases'): their local ARNs are known
        before anything exists, so register them first."""
        t, r = self.template, self.resolver
        for fn in t.functions():
            name = self._function_name(fn.logical_id, fn.function_name)
            arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
            r.register(fn.logical_id, name, Arn=arn)
        for alias in t.aliases():
            fn_arn = r.physical[alias.function_logical_id].attributes["Arn"]
            r.register(
                alias.logical_id, f"{fn_arn}:{alias.name}", AliasArn=f"{fn_arn}:{alias.name}"
            )
        for sm in t.resources("AWS::StepFunctions::StateMachine"):
            name = self._name_property(sm.logical_id, sm.properties.get("StateMachineName"), 80)
            arn = f"arn:aws:states:{region}:{account}:stateMachine:{name}"
            r.register(sm.logical_id, arn, Arn=arn, Name=name)

    def _function_name(self, logical_id: str, name_property: Any) -> str:
        return self._name_property(logical_id, name_property, 64)

    def _name_property(self, logical_id: str, value: Any, max_len: int) -> str:
        if value is not None:
            return self.resolver.resolve_str(value)
        return self.template.local_name(logical_id, max_len)

    def _create_queues(self) -> None:
        sqs = self.client("sqs")
        pending = {q.logical_id: q for q in self.template.queues()}
        # DLQs first: a redrive policy must name an existing queue's ARN.
        while pending:
            ready = [
                q
                for q in pending.values()
                if q.redrive is None or q.redrive.dead_letter_queue_logical_id not in pending
            ]
            if not ready:
                raise TemplateError(f"redrive cycle between queues {sorted(pending)}")
            for q in ready:
                del pending[q.logical_id]
                name = self._name_property(q.logical_id, q.queue_name, 80 - 5 * q.fifo)
                if q.fifo and not name.endswith(".fifo"):
                    name += ".fifo"
                attrs = {
                    "VisibilityTimeout": str(q.visibility_timeout_s),
                    "MessageRetentionPeriod": str(q.message_retention_s),
                    "DelaySeconds": str(q.delay_s),
                    "ReceiveMessageWaitTimeSeconds": str(q.receive_wait_s),
                    "SqsManagedSseEnabled": str(q.sqs_managed_sse).lower(),
                }
                if q.maximum_message_size is not None:
                    attrs["MaximumMessageSize"] = str(q.maximum_message_size)
                if q.fifo:
                    attrs["FifoQueue"] = "true"
                if q.redrive is not None:
                    dlq_arn = self.resolver.physical[
                        q.redrive.dead_letter_queue_logical_id
                    ].attributes["Arn"]
                    attrs["RedrivePolicy"] = json.dumps(
                        {
                            "deadLetterTargetArn": dlq_arn,
                            "maxReceiveCount": q.redrive.max_receive_count,
                        }
                    )
                url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                    "Attributes"
                ]["QueueArn"]
                self.resolver.register(q.logical_id, url, Arn=arn, QueueName=name, QueueUrl=url)

    def _create_tables(self) -> None:
        ddb = self.client("dynamodb")
        for res in self.template.resources("AWS::DynamoDB::Table"):
            p = res.properties
            name = self._name_property(res.logical_id, p.get("TableName"), 255)
            kwargs: dict[str, Any] = {
                "TableName": name,
                "KeySchema": p["KeySchema"],
                "AttributeDefinitions": p["AttributeDefinitions"],
                "BillingMode": p.get("BillingMode", "PROVISIONED"),
            }
            if "ProvisionedThroughput" in p:
                kwargs["ProvisionedThroughput"] = {
                    k: int(v) for k, v in p["ProvisionedThroughput"].items()
                }
            if "GlobalSecondaryIndexes" in p:
                kwargs["GlobalSecondaryIndexes"] = p["GlobalSecondaryIndexes"]
            arn = ddb.create_table(**kwargs)["TableDescription"]["TableArn"]
            ttl = p.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={
                        "AttributeName": ttl["AttributeName"],
                        "Enabled": True,
                    },
                )
            self.resolver.register(res.logical_id, name, Arn=arn)

    def _create_secrets(self, env_refs: Mapping[str, str]) -> str | None:
        """Creates every secret; returns the database secret's local ARN.

        Roles come from who uses a secret: the one behind ``DB_SECRET_ARN`` (else the generated
        one with a ``username``: RDS's master secret) holds the local PostgreSQL login; the one
        behind ``PAYMENT_API_KEY_SECRET_ARN`` holds the fake provider's key."""
        t = self.template
        sm = self.client("secretsmanager")
        db_lid = self._secret_id(env_refs.get("DB_SECRET_ARN"))
        key_lid = self._secret_id(env_refs.get("PAYMENT_API_KEY_SECRET_ARN"))
        pg = self.postgres
        for res in t.resources("AWS::SecretsManager::Secret"):
            p = res.properties
            generate = p.get("GenerateSecretString", {})
            if db_lid is None and "username" in str(generate.get("SecretStringTemplate", "")):
                db_lid = res.logical_id
            if res.logical_id == db_lid:
                value = json.dumps(
                    {
                        "username": pg.user,
                        "password": pg.password,
                        "host": pg.host,
                        "port": pg.port,
                        "dbname": pg.dbname,
                        "engine": "postgres",
                    }
                )
            elif res.logical_id == key_lid:
                value = self.payment_api_key
            elif "SecretString" in p:
                value = self.resolver.resolve_str(p["SecretString"])
            else:
                value = _generated_secret(generate)
            name = self._name_property(res.logical_id, p.get("Name"), 256)
            arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
            self.resolver.register(res.logical_id, arn, Id=arn)
        for att in t.resources("AWS::SecretsManager::SecretTargetAttachment"):
            # CDK hands out ``cluster.secret`` as this attachment; its Ref is the secret's ARN.
            secret = t.referenced_id(att.properties.get("SecretId"))
            if secret is not None:
                self.resolver.register(att.logical_id, self.resolver.physical[secret].ref)
        self._create_proxy_logins(sm)
        return self._ref_of(db_lid)

    def _create_proxy_logins(self, sm: Any) -> None:
        """One local secret per database user the proxy's clients log in as (IAM stand-in)."""
        database = self.database
        if database.proxy is None:
            return
        users = sorted(
            {
                self.resolver.resolve_str(fn.environment["DB_USER"])
                for fn in self.template.functions()
                if "DB_HOST" in fn.environment
                and "DB_USER" in fn.environment
                and talks_to_proxy(self.template, fn.environment["DB_HOST"])
            }
        )
        if users and database.app_password is None:
            raise TemplateError("a local proxy needs app_password for its clients' logins")
        for user in users:
            value = json.dumps({"username": user, "password": database.app_password})
            arn = sm.create_secret(Name=f"{PROXY_LOGIN_SECRET_PREFIX}{user}", SecretString=value)
            self.proxy_logins[user] = arn["ARN"]

    def _secret_id(self, logical_id: str | None) -> str | None:
        if logical_id is None:
            return None
        res = self.template.resource(logical_id)
        if res.type == "AWS::SecretsManager::SecretTargetAttachment":
            return self.template.referenced_id(res.properties.get("SecretId"))
        return logical_id

    def _create_user_pool(self) -> tuple[str | None, str | None]:
        idp = self.client("cognito-idp")
        pool_id = client_id = None
        for res in self.template.resources("AWS::Cognito::UserPool"):
            p = res.properties
            kwargs: dict[str, Any] = {
                "PoolName": self._name_property(res.logical_id, p.get("UserPoolName"), 128)
            }
            for key in (
                "Policies",
                "UsernameAttributes",
                "AutoVerifiedAttributes",
                "AliasAttributes",
            ):
                if key in p:
                    kwargs[key] = p[key]
            pool = idp.create_user_pool(**kwargs)["UserPool"]
            pool_id = pool["Id"]
            self.resolver.register(
                res.logical_id,
                pool_id,
                Arn=pool["Arn"],
                ProviderName=f"cognito-idp.{self.template.region}.amazonaws.com/{pool_id}",
                ProviderURL=f"https://cognito-idp.{self.template.region}.amazonaws.com/{pool_id}",
            )
        for res in self.template.resources("AWS::Cognito::UserPoolClient"):
            p = res.properties
            pool_ref = self.resolver.resolve_str(p["UserPoolId"])
            kwargs = {
                "UserPoolId": pool_ref,
                "ClientName": self._name_property(res.logical_id, p.get("ClientName"), 128),
                "GenerateSecret": bool(p.get("GenerateSecret", False)),
            }
            if "ExplicitAuthFlows" in p:
                # Demo users log in with ADMIN_USER_PASSWORD_AUTH (moto has no SRP helper);
                # an app client without that flow would refuse it in AWS.
                kwargs["ExplicitAuthFlows"] = sorted(
                    {*p["ExplicitAuthFlows"], "ALLOW_ADMIN_USER_PASSWORD_AUTH"}
                )
            client = idp.create_user_pool_client(**kwargs)["UserPoolClient"]
            client_id = client["ClientId"]
            self.resolver.register(
                res.logical_id, client_id, ClientSecret=client.get("ClientSecret", "")
            )
        return pool_id, client_id

    def _create_functions(self, role: str, db_secret: str | None) -> dict[str, LocalFunction]:
        t, r = self.template, self.resolver
        lam = self.client("lambda")
        zip_bytes = _placeholder_zip()
        aliases = {a.function_logical_id: a for a in t.aliases()}
        out: dict[str, LocalFunction] = {}
        for fn in t.functions():
            if not _in_code_root(fn.handler, self.code_root):
                # CDK's own helpers (log retention, custom resources, triggers): not ours to run.
                announce(
                    self.say,
                    "cdk-helpers-not-run",
                    f"skipped {fn.logical_id}: handler {fn.handler} is not under {self.code_root}",
                )
                continue
            name = r.physical[fn.logical_id].ref
            via_proxy = "DB_HOST" in fn.environment and talks_to_proxy(t, fn.environment["DB_HOST"])
            login = None
            if via_proxy and "DB_USER" in fn.environment:
                login = self.proxy_logins.get(r.resolve_str(fn.environment["DB_USER"]))
            overrides = local_overrides(
                fn.environment,
                database=self.database,
                db_secret_arn=db_secret,
                payment_api_url=self.payment_api_url,
                via_proxy=via_proxy,
                proxy_login_secret_arn=login,
            )
            env: dict[str, str] = {}
            for key, value in fn.environment.items():
                try:
                    env[key] = overrides[key] if key in overrides else r.resolve_str(value)
                except TemplateError as exc:
                    raise TemplateError(f"{fn.logical_id} env {key}: {exc}") from exc
            env.update(overrides)
            # moto keeps a record of the function (the code runs in a worker, not from this zip).
            lam.create_function(
                FunctionName=name,
                Runtime=fn.runtime or "python3.13",
                Role=role,
                Handler=fn.handler,
                Code={"ZipFile": zip_bytes},
                Timeout=fn.timeout_s,
                MemorySize=fn.memory_mb,
                Environment={"Variables": env},
            )
            if fn.reserved_concurrency is not None:
                lam.put_function_concurrency(
                    FunctionName=name, ReservedConcurrentExecutions=fn.reserved_concurrency
                )
            version = lam.publish_version(FunctionName=name)["Version"]
            arn = r.physical[fn.logical_id].attributes["Arn"]
            alias_arn = arn
            if (alias := aliases.get(fn.logical_id)) is not None:
                alias_arn = lam.create_alias(
                    FunctionName=name, Name=alias.name, FunctionVersion=version
                )["AliasArn"]
                r.register(alias.logical_id, alias_arn, AliasArn=alias_arn)
            for ver in t.resources("AWS::Lambda::Version"):
                if t.referenced_id(ver.properties.get("FunctionName")) == fn.logical_id:
                    r.register(ver.logical_id, f"{arn}:{version}", Version=version)
            config = FunctionConfig(
                function_name=name,
                handler=fn.handler,
                timeout_s=float(fn.timeout_s),
                memory_mb=fn.memory_mb,
                environment={**env, **self._aws_env()},
                region=t.region,
                account_id=t.account_id,
                version=version,
                invoked_function_arn=alias_arn,
                code_root=self.code_root,
                runtime=fn.runtime or "python3.13",
            )
            out[fn.logical_id] = LocalFunction(
                fn.logical_id, name, arn, alias_arn, version, fn.reserved_concurrency, config
            )
        return out

    def _create_event_source_mappings(
        self, functions: Mapping[str, LocalFunction]
    ) -> dict[str, str]:
        """The SQS mappings as moto records, so ``orders-ops intake pause|resume`` (F19) and
        ``aws lambda update-event-source-mapping`` switch them; the local poller follows their
        State. moto's own synchronous SQS -> Lambda trigger is detached: polling is the
        platform's job, done by ``devstack.event_source`` with the template's settings."""
        from moto.sqs.models import sqs_backends

        lam = self.client("lambda")
        uuids: dict[str, str] = {}
        for spec in self.template.event_source_mappings():
            fn = functions.get(spec.function_logical_id)
            if fn is None:
                continue
            target = fn.name
            if self.template.resource(spec.target_logical_id).type == "AWS::Lambda::Alias":
                target = f"{fn.name}:{fn.alias_arn.rsplit(':', 1)[-1]}"
            queue_arn = self.resolver.physical[spec.queue_logical_id].attributes["Arn"]
            kwargs: dict[str, Any] = {
                "EventSourceArn": queue_arn,
                "FunctionName": target,
                "BatchSize": spec.batch_size,
                "MaximumBatchingWindowInSeconds": spec.maximum_batching_window_s,
                "Enabled": spec.enabled,
            }
            if spec.report_batch_item_failures:
                kwargs["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
            if spec.maximum_concurrency is not None:
                kwargs["ScalingConfig"] = {"MaximumConcurrency": spec.maximum_concurrency}
            uuids[spec.logical_id] = lam.create_event_source_mapping(**kwargs)["UUID"]
            _, _, _, region, account, queue_name = queue_arn.split(":")
            sqs_backends[account][region].queues[queue_name].lambda_event_source_mappings.clear()
        return uuids

    def _create_state_machines(self, role: str) -> list[str]:
        # Made with create_state_machine, not moto's CloudFormation: those do not execute.
        sfn = self.client("stepfunctions")
        arns = []
        for res in self.template.resources("AWS::StepFunctions::StateMachine"):
            p = res.properties
            if "DefinitionString" in p:
                definition = self.resolver.resolve_str(p["DefinitionString"])
            else:
                definition = json.dumps(self.resolver.resolve(p["Definition"]))
            for key, value in p.get("DefinitionSubstitutions", {}).items():
                definition = definition.replace("${" + key + "}", self.resolver.resolve_str(value))
            json.loads(definition)  # fail here, naming the template, rather than at first run
            name = self.resolver.physical[res.logical_id].attributes["Name"]
            arn = sfn.create_state_machine(
                name=name,
                definition=definition,
                roleArn=role,
                type=p.get("StateMachineType", "STANDARD"),
            )["stateMachineArn"]
            arns.append(arn)
        return arns


def _cached_sfn_client(endpoint_for: Callable[[str], str]) -> Callable[..., Any]:
    clients: dict[tuple[str, str], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (region, service)
        with lock:  # boto3's default session is not thread-safe when creating clients
            if key not in clients:
                clients[key] = boto3.client(
                    service,  # type: ignore[call-overload]
                    region_name=region,
                    endpoint_url=endpoint_for(service),
                    aws_access_key_id="ak",
                    aws_secret_access_key="sk",  # noqa: S106 - moto's
                    config=Config(
                        parameter_validation=False,
                        retries={"max_attempts": 0, "total_max_attempts": 1},
                        connect_timeout=600,
                        read_timeout=600,
                        max_pool_connections=64,
                    ),
                )
            return clients[key]

    return boto_client_for


class _ReapingThreadList(list[threading.Thread]):
    """moto's TMP_THREADS, but finished threads are joined (freeing their stacks) and dropped
    each time a thread is added."""

    def append(self, thread: threading.Thread) -> None:
        finished = [t for t in list(self) if t.ident is not None and not t.is_alive()]
        for done in finished:
            try:
                done.join(timeout=0)
            except RuntimeError:
                # Still starting on another thread: its ident is set before it signals that it
                # started, and until then is_alive() is False and join() refuses. Raising here
                # failed that StartExecution with its execution left RUNNING forever.
                continue
            with contextlib.suppress(ValueError):
                self.remove(done)
        super().append(thread)


def _cached_asl_program() -> Callable[[ExecutionWorker], Any]:
    """``ExecutionWorker._get_evaluation_entrypoint``, parsing each definition once.

    The parsed program holds no execution state (every execution evaluates it against its own
    ``Environment``; moto already shares one program between a Map's concurrent iterations)."""
    programs: dict[str, Any] = {}
    lock = threading.Lock()

    def _get_evaluation_entrypoint(worker: ExecutionWorker) -> Any:
        definition = worker._evaluation_details.state_machine_details.definition
        with lock:
            program = programs.get(definition)
        if program is None:
            program = AmazonStateLanguageParser.parse(definition)[0]
            with lock:
                program = programs.setdefault(definition, program)
        return program

    return _get_evaluation_entrypoint


def _cached_jsonpath(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``jsonpath_ng`` ``parse``, memoised per path (thread-safe; a definition has few)."""
    return functools.lru_cache(maxsize=1024)(parse)


def _cached_backend_for_host(
    lookup: Callable[[DomainDispatcherApplication, str | None], Any],
) -> Callable[[DomainDispatcherApplication, str | None], Any]:
    answers: dict[str | None, Any] = {}

    def get_backend_for_host(app: DomainDispatcherApplication, host: str | None) -> Any:
        if host not in answers:  # called under the dispatcher's own lock
            answers[host] = lookup(app, host)
        return answers[host]

    return get_backend_for_host


def _retention_period_check(
    backend: sqs_models.SQSBackend, queue_name: str, message: sqs_models.Message
) -> bool:
    """``SQSBackend.is_message_valid_based_on_retention_period`` with the same answer: moto's
    reads ``MessageRetentionPeriod`` through ``get_queue_attributes``, which computes every
    attribute, including three counts over all of the queue's messages, per received message."""
    queue = backend.get_queue(queue_name)
    retention_period = int(queue.message_retention_period)  # type: ignore[attr-defined]
    return bool(retention_period + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]


_COUNT_ATTRIBUTES: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)
_sending = threading.local()  # set while SQSBackend.send_message runs on this thread


def _queue_counts(queue: sqs_models.Queue) -> dict[str, int]:
    """moto's three ``approximate_number_of_messages*`` in one scan, with one clock read."""
    now = unix_time_millis()
    available = delayed = not_visible = 0
    for message in queue._messages:
        is_delayed = now < message.delayed_until
        is_visible = now > message.visible_at
        delayed += is_delayed
        not_visible += not is_visible
        available += is_visible and not is_delayed
    return {
        "ApproximateNumberOfMessages": available,
        "ApproximateNumberOfMessagesDelayed": delayed,
        "ApproximateNumberOfMessagesNotVisible": not_visible,
    }


def _queue_attributes(queue: sqs_models.Queue) -> dict[str, Any]:
    """``Queue.attributes`` (moto 5.2), its counts from ``_queue_counts``; inside
    ``send_message`` (which reads ``ContentBasedDeduplication`` only) without the counts."""
    counts = {} if getattr(_sending, "active", False) else _queue_counts(queue)
    names = list(queue.BASE_ATTRIBUTES)
    if queue.fifo_queue:
        names += queue.FIFO_ATTRIBUTES
    if queue.kms_master_key_id:  # type: ignore[attr-defined]
        names += queue.KMS_ATTRIBUTES
    result: dict[str, Any] = {}
    for name in names:
        if name in _COUNT_ATTRIBUTES:
            if counts:
                result[name] = counts[name]
        else:
            result[name] = getattr(queue, camelcase_to_underscores(name))
    if queue.policy:
        result["Policy"] = queue.policy
    if queue.redrive_policy:
        result["RedrivePolicy"] = json.dumps(queue.redrive_policy)
    for key, value in result.items():
        if isinstance(value, bool):
            result[key] = str(value).lower()
    return result


def _get_queue_attributes(
    backend: sqs_models.SQSBackend, queue_name: str, attribute_names: list[str]
) -> dict[str, Any]:
    """``SQSBackend.get_queue_attributes`` (moto 5.2), computing the attributes once."""
    queue = backend.get_queue(queue_name)
    if not attribute_names:
        return {}
    valid_names = ["All", *queue.BASE_ATTRIBUTES, *queue.FIFO_ATTRIBUTES, *queue.KMS_ATTRIBUTES]
    invalid_name = next((name for name in attribute_names if name not in valid_names), None)
    if invalid_name or invalid_name == "":
        raise InvalidAttributeName(invalid_name)
    attributes = queue.attributes
    if "All" in attribute_names:
        return attributes
    return {
        name: attributes[name]
        for name in attribute_names
        if name in attributes and attributes[name] is not None
    }


def _wait_for_messages(queue: sqs_models.Queue, timeout: int) -> None:
    """``Queue.wait_for_messages`` (moto 5.2), also woken when the next invisible or delayed
    message becomes receivable: moto waits on the queue's condition, which only a new message
    notifies. Returns when a message is receivable or after ``timeout`` seconds, as before."""
    deadline = time.monotonic() + timeout
    lock = queue._messages_lock
    with lock:
        while not queue.messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            lock.wait(min(remaining, _seconds_until_receivable(queue)))


def _seconds_until_receivable(queue: sqs_models.Queue) -> float:
    """Until the first message now invisible or delayed can be received (inf: none is)."""
    upcoming = [max(m.visible_at, m.delayed_until) for m in queue._messages]
    if not upcoming:
        return float("inf")
    # moto's Message.visible is ``now > visible_at`` (milliseconds): wake just after it.
    return max(0.001, (min(upcoming) - unix_time_millis()) / 1000 + 0.002)


def _send_message(original: Callable[..., Any]) -> Callable[..., Any]:
    def send_message(*args: Any, **kwargs: Any) -> Any:
        _sending.active = True
        try:
            return original(*args, **kwargs)
        finally:
            _sending.active = False

    return send_message


def _in_code_root(handler: str, code_root: Path) -> bool:
    module = handler.rpartition(".")[0].replace(".", "/")
    return (code_root / f"{module}.py").is_file() or (code_root / module / "__init__.py").is_file()


def _generated_secret(spec: Mapping[str, Any]) -> str:
    password = secrets.token_urlsafe(24)
    template = spec.get("SecretStringTemplate")
    key = spec.get("GenerateStringKey")
    if template and key:
        doc = json.loads(template)
        doc[key] = password
        return json.dumps(doc)
    return password


def _placeholder_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.txt", "devstack: the code runs in a local worker process\n")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


__all__ = [
    "DEFAULT_RETRY_SLEEP_SCALE",
    "TRACING_OFF_ENV",
    "LocalAws",
    "LocalFunction",
    "LocalResources",
    "PostgresSettings",
    "ScaledRetrySleep",
    "local_overrides",
]
