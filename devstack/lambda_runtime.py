"""Lambda execution environments for the local run: one subprocess per environment.

Why a process and not an in-process call: a real execution environment has its own
environment variables, runs module-level init once (cold start) and keeps state (clients,
connection, circuit breaker) between invocations, and it can be killed mid-invocation when it
times out. Running handlers in the parent would share ``os.environ`` and module state between
nine functions and could never enforce a timeout.

Protocol (lean on purpose: thousands of invocations in a chaos run, no per-call spawn):
- parent -> worker stdin, one line per invocation: ``<remaining_ms> <request_id> <arn> <event>``
- worker -> parent on a dedicated pipe (``--result-fd``), one line per invocation:
  ``<flag> <payload>`` where flag is ``ok``, ``err`` or ``init`` (init failed); payloads are
  ``json.dumps`` output, which never contains a raw newline.
- the worker's stdout/stderr carry only the handler's own logs; the parent forwards each line
  to a log sink, the local stand-in for CloudWatch Logs.

The worker entry point is this module (``python -m devstack.lambda_runtime``) so the runtime
and its client cannot drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_CODE_ROOT: Final = PROJECT_ROOT / "functions"

INIT_TIMEOUT_S: Final = 30.0
"""Lambda gives init 10 s. Locally nine functions (x pool size) may import boto3, Powertools
and psycopg at once on a small machine, so init gets more slack; it is not under test."""

_INHERITED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
"""All a worker takes from the developer's shell: a stray AWS_PROFILE or PYTHONPATH there
must not leak into what should behave like a fresh Lambda environment (F16)."""


@dataclass(frozen=True)
class LogRecord:
    function_name: str
    stream: str  # "stdout", "stderr" or "platform" (START/REPORT/timeout lines)
    line: str


LogSink = Callable[[LogRecord], None]


def discard_logs(record: LogRecord) -> None:
    """A sink that keeps nothing. Recognised by identity: a worker whose sink it is writes its
    logs to ``/dev/null`` instead of a pipe, so the parent reads and decodes none of them (the
    handler still formats and writes every line, as in Lambda)."""


def stderr_sink(record: LogRecord) -> None:
    """Default sink: one prefixed line per record on the parent's stderr."""
    print(f"[{record.function_name}] {record.line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class InvokeResult:
    payload: str  # JSON text, exactly what Lambda's Invoke returns as Payload
    errored: bool

    @property
    def error_type(self) -> str | None:
        if not self.errored:
            return None
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(self.payload).get("errorType"))
        return None

    def json(self) -> Any:
        return json.loads(self.payload)


class Invoker(Protocol):
    """Anything that runs one function: a pool, a single worker or a test double."""

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult: ...


@dataclass(frozen=True)
class FunctionConfig:
    """What an execution environment needs; ``devstack.aws`` builds it from the template."""

    function_name: str
    handler: str  # "orders_saga.handlers.api.handler"
    timeout_s: float
    memory_mb: int = 128
    environment: Mapping[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account_id: str = "123456789012"  # moto's default; LocalAws passes the template's
    version: str = "$LATEST"
    invoked_function_arn: str = ""  # the alias ARN callers use; default: unqualified ARN
    code_root: Path = DEFAULT_CODE_ROOT
    runtime: str = "python3.13"
    init_timeout_s: float = INIT_TIMEOUT_S

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"


def _error_payload(error_type: str, message: str, trace: list[str] | None = None) -> str:
    return json.dumps({"errorType": error_type, "errorMessage": message, "stackTrace": trace or []})


class WorkerDied(RuntimeError):
    pass


class FunctionWorker:
    """One execution environment (one subprocess). Invocations are serialized by a lock.

    Started lazily: the first invocation pays the cold start, like Lambda. A timeout or a
    crash kills the process; the next invocation starts a fresh one (a cold start again).
    """

    def __init__(self, config: FunctionConfig, log_sink: LogSink = stderr_sink) -> None:
        self.config = config
        self._sink = log_sink
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._result_fd = -1
        self._buffer = b""
        self.cold_starts = 0
        self.invocations = 0
        self.timeouts = 0
        self.crashes = 0
        # The event being handled, while an invocation runs: lets a fault injector find the
        # environment serving one order (the chaos run's crash after a side effect).
        self.current_event: Any = None

    # lifecycle

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def warm_up(self) -> None:
        """Start the environment and run its init now instead of on the first invocation."""
        with self._lock:
            self._ensure_started()

    def stop(self) -> None:
        with self._lock:
            self._kill()

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._kill()
        cfg = self.config
        read_fd, write_fd = os.pipe()
        env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
        env.update(cfg.environment)
        env.update(self._runtime_env())
        started = time.monotonic()
        logs = subprocess.DEVNULL if self._sink is discard_logs else subprocess.PIPE
        self._proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "devstack.lambda_runtime", "--result-fd", str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=logs,
            stderr=logs,
            pass_fds=(write_fd,),
            cwd=cfg.code_root,  # Lambda's cwd is the task root (/var/task)
            env=env,
        )
        os.close(write_fd)
        self._result_fd, self._buffer = read_fd, b""
        for stream, name in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr")):
            if stream is None:
                continue  # discarded (discard_logs)
            threading.Thread(
                target=self._forward,
                args=(stream, name),
                daemon=True,
                name=f"logs-{cfg.function_name}-{name}",
            ).start()
        self.cold_starts += 1
        line = self._read_line(started + cfg.init_timeout_s)
        if line is None or not line.startswith(b"ready"):
            detail = line.split(b" ", 1)[1].decode() if line and b" " in line else ""
            self._kill()
            raise WorkerDied(
                detail or _error_payload("Runtime.InitError", "init failed or timed out")
            )
        self._log(
            "platform", f"INIT_DONE Init Duration: {(time.monotonic() - started) * 1000:.2f} ms"
        )

    def _runtime_env(self) -> dict[str, str]:
        """The variables the Lambda service sets in every environment."""
        cfg = self.config
        return {
            "AWS_LAMBDA_FUNCTION_NAME": cfg.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": cfg.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(cfg.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{cfg.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": (
                f"{time.strftime('%Y/%m/%d')}/[{cfg.version}]{uuid.uuid4().hex}"
            ),
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{cfg.runtime}",
            "AWS_REGION": cfg.region,
            "AWS_DEFAULT_REGION": cfg.region,
            "LAMBDA_TASK_ROOT": str(cfg.code_root),
            "_HANDLER": cfg.handler,
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",  # logs reach the sink as they are written
            # Only to find this module; the worker drops it from sys.path before user code.
            "PYTHONPATH": str(PROJECT_ROOT),
        }

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if self._result_fd >= 0:
            os.close(self._result_fd)
            self._result_fd = -1

    # invocation

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult:
        with self._lock:
            self.current_event = event
            try:
                return self._invoke_locked(event, invoked_function_arn)
            finally:
                self.current_event = None

    def _invoke_locked(self, event: Any, invoked_function_arn: str | None) -> InvokeResult:
        cfg = self.config
        request_id = str(uuid.uuid4())
        self.invocations += 1
        try:
            self._ensure_started()
        except WorkerDied as died:
            self.crashes += 1
            return InvokeResult(str(died), errored=True)
        assert self._proc is not None
        assert self._proc.stdin is not None
        arn = invoked_function_arn or cfg.invoked_function_arn or cfg.function_arn
        started = time.monotonic()
        deadline = started + cfg.timeout_s
        body = json.dumps(event, separators=(",", ":"))
        request = f"{int(cfg.timeout_s * 1000)} {request_id} {arn} {body}\n"
        try:
            self._proc.stdin.write(request.encode())
            self._proc.stdin.flush()
            line = self._read_line(deadline)
        except (BrokenPipeError, WorkerDied):
            line = b""
        elapsed_ms = (time.monotonic() - started) * 1000
        if line is None:
            # Lambda kills the environment at the timeout; the next call is a cold start.
            self.timeouts += 1
            self._kill()
            message = f"Task timed out after {cfg.timeout_s:.2f} seconds"
            self._log("platform", f"{time.strftime('%Y-%m-%dT%H:%M:%SZ')} {request_id} {message}")
            return InvokeResult(
                _error_payload("Sandbox.Timedout", f"RequestId: {request_id} Error: {message}"),
                errored=True,
            )
        if not line:
            self.crashes += 1
            code = self._proc.wait() if self._proc is not None else None
            self._kill()
            message = (
                f"RequestId: {request_id} Error: Runtime exited with error: exit status {code}"
            )
            return InvokeResult(_error_payload("Runtime.ExitError", message), errored=True)
        flag, _, payload = line.partition(b" ")
        self._log("platform", f"REPORT RequestId: {request_id} Duration: {elapsed_ms:.2f} ms")
        return InvokeResult(payload.decode(), errored=flag != b"ok")

    def _read_line(self, deadline: float) -> bytes | None:
        """The next result line; ``None`` at the deadline, ``b""`` when the worker died."""
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._result_fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._result_fd, 1 << 16)
            if not chunk:
                return b""
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    # logs

    def _forward(self, stream: IO[bytes], name: str) -> None:
        for raw in iter(stream.readline, b""):
            self._log(name, raw.decode("utf-8", errors="replace").rstrip("\n"))

    def _log(self, stream: str, line: str) -> None:
        with contextlib.suppress(Exception):  # a broken sink must not break the function
            self._sink(LogRecord(self.config.function_name, stream, line))


class FunctionPool:
    """Up to ``size`` environments of one function; each serves one invocation at a time.

    Idle environments are reused most-recently-used first, as Lambda does, so a quiet
    function keeps few warm environments. When all are busy the call waits for one: the
    local stand-in for reserved concurrency (Lambda would throttle instead).
    """

    def __init__(
        self, config: FunctionConfig, *, size: int = 1, log_sink: LogSink = stderr_sink
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.config = config
        self.size = size
        self._sink = log_sink
        self._workers: list[FunctionWorker] = []
        self._idle: queue.LifoQueue[FunctionWorker] = queue.LifoQueue()
        self._lock = threading.Lock()
        # Idle environments of other configurations (switch_config), oldest first.
        self._parked: dict[tuple[str, ...], list[FunctionWorker]] = {}

    @property
    def workers(self) -> list[FunctionWorker]:
        return list(self._workers)

    @property
    def idle(self) -> int:
        """Environments waiting for an invocation (diagnostics)."""
        return self._idle.qsize()

    @property
    def busy(self) -> int:
        """Environments handling an invocation right now."""
        return len(self._workers) - self._idle.qsize()

    def warm_up(self, count: int = 1) -> None:
        with self._checkout(fresh=min(count, self.size)) as batch:
            for worker in batch:
                worker.warm_up()

    def invoke(self, event: Any, *, invoked_function_arn: str | None = None) -> InvokeResult:
        with self._checkout() as (worker,):
            return worker.invoke(event, invoked_function_arn=invoked_function_arn)

    def stop(self) -> None:
        with self._lock:
            parked = [w for workers in self._parked.values() for w in workers]
        for worker in [*self.workers, *parked]:
            worker.stop()

    def reset_workers(self) -> None:
        """Forget the (stopped) environments: the next ones start with ``self.config``."""
        with self._lock:
            self._workers = []
            self._idle = queue.LifoQueue()
            parked, self._parked = self._parked, {}
        for workers in parked.values():
            for worker in workers:
                worker.stop()

    def switch_config(self, config: FunctionConfig, *, keep_parked: int = 1) -> None:
        """Serve with ``config`` from now on (``LocalStack.apply_ablations``: on a settled
        stack). The environments of the current configuration are parked, idle and warm,
        instead of stopped, and the ones parked under ``config`` earlier serve again: switching
        an ablation back off returns to the environments that ran before it, as Lambda keeps
        an idle environment warm, instead of cold-starting ``size`` new ones. Without parked
        ones the next invocation cold-starts as before. At most ``keep_parked`` configurations
        stay parked (the oldest are stopped); environments still busy are stopped."""
        to_stop: list[FunctionWorker] = []
        with self._lock:
            current, self._workers = self._workers, []
            idle = []
            with contextlib.suppress(queue.Empty):
                while True:
                    idle.append(self._idle.get_nowait())
            if current and len(idle) == len(current):
                to_stop += self._parked.pop(_config_key(self.config), [])
                self._parked[_config_key(self.config)] = current
            else:
                to_stop += current
            self.config = config
            self._workers = self._parked.pop(_config_key(config), [])
            self._idle = queue.LifoQueue()
            for worker in self._workers:
                self._idle.put(worker)
            while len(self._parked) > keep_parked:
                to_stop += self._parked.pop(next(iter(self._parked)))
        for worker in to_stop:
            worker.stop()

    @property
    def parked(self) -> int:
        """Environments parked under other configurations (diagnostics)."""
        with self._lock:
            return sum(len(workers) for workers in self._parked.values())

    @contextlib.contextmanager
    def _checkout(self, fresh: int = 0) -> Iterator[list[FunctionWorker]]:
        taken: list[FunctionWorker] = []
        try:
            for _ in range(max(fresh, 1)):
                taken.append(self._take())
            yield taken
        finally:
            with self._lock:
                for worker in taken:
                    # One switched away from meanwhile (switch_config) is not this pool's.
                    if any(worker is w for w in self._workers):
                        self._idle.put(worker)

    def _take(self) -> FunctionWorker:
        with contextlib.suppress(queue.Empty):
            return self._idle.get_nowait()
        with self._lock:
            if len(self._workers) < self.size:
                worker = FunctionWorker(self.config, self._sink)
                self._workers.append(worker)
                return worker
        return self._idle.get()


def _config_key(config: FunctionConfig) -> tuple[str, ...]:
    """A configuration's identity for parking (``FunctionConfig`` holds a dict: unhashable)."""
    settings = {k: v for k, v in vars(config).items() if k != "environment"}
    return (
        repr(sorted(settings.items())),
        *sorted(f"{k}={v}" for k, v in config.environment.items()),
    )


# --- worker side ----------------------------------------------------------------------------


class LambdaContext:
    """The context object the Python runtime passes to a handler."""

    def __init__(self, request_id: str, invoked_arn: str, deadline: float) -> None:
        env = os.environ
        self.function_name = env["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = env["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = int(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        self.log_group_name = env["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.invoked_function_arn = invoked_arn
        self.aws_request_id = request_id
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _trace_header() -> str:
    # Sampled=0: the X-Ray SDK does all its work but sends nothing (no daemon locally).
    root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
    return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _load_handler(spec: str) -> Callable[[Any, LambdaContext], Any]:
    module_name, _, attr = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise _InitError(
            "Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{module_name}'"
        )
    return handler  # type: ignore[no-any-return]


class _InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="devstack.lambda_runtime")
    parser.add_argument("--result-fd", type=int, required=True)
    ns = parser.parse_args(argv)
    results = os.fdopen(ns.result_fd, "wb", buffering=0)
    # User code sees the task root first and never this project's root (see _runtime_env).
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PROJECT_ROOT]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    os.environ.pop("PYTHONPATH", None)

    def send(flag: str, payload: str) -> None:
        results.write(f"{flag} {payload}\n".encode())

    # F20: when the stack records, hook every botocore client before the handler's init builds
    # one (call_recorder.CALL_LOG_DIR_ENV; imported only then, so other runs load nothing more).
    if os.environ.get("DEVSTACK_CALL_LOG_DIR"):
        from devstack.call_recorder import install_from_environment

        install_from_environment()
    # Issue 11: a containment switched off for this run (devstack/ablations.py), patched before
    # the handler module binds the names it uses.
    if os.environ.get("DEVSTACK_ABLATIONS"):
        from devstack.ablations import install_from_environment as install_ablations

        install_ablations()

    try:
        handler = _load_handler(os.environ["_HANDLER"])
    except _InitError as exc:
        print(
            json.dumps({"level": "ERROR", "errorType": exc.error_type, "errorMessage": str(exc)}),
            file=sys.stderr,
        )
        send("init", _error_payload(exc.error_type, str(exc)))
        return 1
    except BaseException as exc:  # noqa: BLE001 (any init failure is reported, like Lambda)
        send("init", _error_payload(type(exc).__name__, str(exc), traceback.format_exception(exc)))
        return 1
    send("ready", "{}")

    for raw in sys.stdin.buffer:
        remaining_ms, request_id, arn, body = raw.decode().rstrip("\n").split(" ", 3)
        os.environ["_X_AMZN_TRACE_ID"] = _trace_header()
        context = LambdaContext(request_id, arn, time.monotonic() + int(remaining_ms) / 1000)
        try:
            result = handler(json.loads(body), context)
        except Exception as exc:  # noqa: BLE001 (the runtime turns every error into a payload)
            trace = traceback.format_list(traceback.extract_tb(exc.__traceback__)[1:])
            print(
                json.dumps(
                    {
                        "level": "ERROR",
                        "requestId": request_id,
                        "errorType": type(exc).__name__,
                        "errorMessage": str(exc),
                        "stackTrace": trace,
                    }
                ),
                file=sys.stderr,
                flush=True,
            )
            send("err", _error_payload(type(exc).__name__, str(exc), trace))
            continue
        try:
            payload = json.dumps(result)
        except (TypeError, ValueError) as exc:
            send(
                "err", _error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}")
            )
            continue
        sys.stdout.flush()
        send("ok", payload)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
