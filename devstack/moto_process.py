"""A moto server in its own process, so a second core serves part of the local AWS.

``LocalAws`` runs its main moto server in the parent process: the Step Functions interpreter
must call the Lambda worker pools there. Everything else the functions call would then share
that process's single GIL with the interpreter, the SQS poller and the API gateway; a chaos run
is bound by it while the second core idles. The services in ``SEPARATE_SERVICES`` are therefore
served by this module's process instead (the same moto code, its own port), and every client
reaches them through botocore's per-service endpoint variable (``AWS_ENDPOINT_URL_DYNAMODB``).

DynamoDB qualifies because nothing else in moto calls it here (no streams, no Step Functions
integration in the template): it is the functions' idempotency store, about half of the
local AWS's request load.

Protocol: the parent starts ``python -m devstack.moto_process --port N`` with a pipe on stdin;
the child prints ``ready`` once it listens and serves until its stdin closes (the parent
stopped or died), so it can never outlive the stack.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

from moto.moto_server import threaded_moto_server
from moto.moto_server.werkzeug_app import MotoRequestHandler

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
SEPARATE_SERVICES: Final = ("dynamodb",)
"""Served by the child process; botocore's ``AWS_ENDPOINT_URL_<SERVICE>`` points at it."""
START_TIMEOUT_S: Final = 60.0


class _BodyReader(io.RawIOBase):
    """The request body as the app sees it: at most Content-Length bytes of the socket, so
    the rest of the connection stays for the next request; ``drain`` skips what was unread."""

    def __init__(self, stream: io.BufferedIOBase, length: int) -> None:
        self._stream = stream
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        data = self._stream.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> bool:
        while self._left > 0:
            if not self._stream.read(min(self._left, 1 << 16)):
                return False
        return True


class _NothingMore(io.RawIOBase):
    """Stands in for the socket's reader while werkzeug finishes a response: werkzeug then
    discards whatever the client sent next (it assumes the connection closes), which on a
    kept connection is the next request."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return 0


class KeepAliveRequestHandler(MotoRequestHandler):
    """moto's request handler with HTTP/1.1 keep-alive (throughput only, devstack.aws).

    Werkzeug's development server answers every request with ``Connection: close``, so each
    botocore call paid a TCP connect and the server a new thread. Here a request with a
    ``Content-Length`` (botocore's always have one) keeps its connection: the app reads exactly
    that many bytes through ``_BodyReader`` (drained after the response, as werkzeug's comment
    asks) and werkzeug's after-response discard reads nothing. Anything else (chunked bodies,
    a client asking to close) still closes."""

    # werkzeug writes the headers and the body separately: with Nagle on, every response on a
    # kept connection waited ~40 ms for the client's delayed ACK before its body went out
    # (measured: 44-48 ms per AWS call, 0.25 ms with it off), so every function invocation,
    # Step Functions task and poll paid it several times over.
    disable_nagle_algorithm = True
    _body: _BodyReader | None = None

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked or not (length is None or length.strip().isdigit()):
            self._body = None
            super().run_wsgi()
            return
        body = self._body = _BodyReader(self.rfile, int(length or 0))
        socket_reader, self.rfile = self.rfile, _NothingMore()  # type: ignore[assignment]
        try:
            super().run_wsgi()
        finally:
            self.rfile = socket_reader
            self._body = None
        if not body.drain():
            self.close_connection = True

    def make_environ(self) -> dict[str, Any]:
        environ = super().make_environ()
        if self._body is not None:
            environ["wsgi.input"] = self._body
        return environ

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "connection" and value.lower() == "close" and self._body is not None:
            return  # keep the connection (http.server then reads the next request on it)
        super().send_header(keyword, value)


def keep_alive_servers() -> None:
    """Make ``ThreadedMotoServer`` (started after this) use ``KeepAliveRequestHandler``."""
    setattr(threaded_moto_server, "MotoRequestHandler", KeepAliveRequestHandler)  # noqa: B010


def endpoint_env_var(service: str) -> str:
    """botocore's per-service endpoint variable (``AWS_ENDPOINT_URL_DYNAMODB``)."""
    return f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_').replace(' ', '_')}"


class MotoProcess:
    """Start/stop the child. ``start`` returns at once; ``wait_ready`` blocks until it listens,
    so the parent can set up its own server meanwhile."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "devstack.moto_process", "--port", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
            env=env,
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise RuntimeError("the moto process was not started")
        deadline = time.monotonic() + timeout_s
        line = _read_line(proc.stdout, deadline)
        if line != b"ready":
            self.stop()
            raise RuntimeError(f"the moto process did not start (said {line!r})")

    def request_stop(self) -> None:
        """Tell the child to stop without waiting for it (``stop`` waits): its server's
        shutdown (~0.5 s) then overlaps the parent's own."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the child's signal to stop
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _read_line(stream: IO[bytes], deadline: float) -> bytes:
    import select

    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return buffer
        ready, _, _ = select.select([stream], [], [], remaining)
        if not ready:
            return buffer
        chunk = os.read(stream.fileno(), 1024)
        if not chunk:
            return buffer
        buffer += chunk
    return buffer.partition(b"\n")[0].strip()


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="devstack.moto_process")
    parser.add_argument("--port", type=int, required=True)
    ns = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import ThreadedMotoServer

    from devstack.aws import _cached_backend_for_host
    from devstack.moto_fidelity import fidelity_patches

    for owner, attr, value in fidelity_patches():  # AWS's atomicity (see there)
        setattr(owner, attr, value)
    # The same routing cache as the parent's (devstack.aws, announced there).
    cached = _cached_backend_for_host(DomainDispatcherApplication.get_backend_for_host)
    setattr(DomainDispatcherApplication, "get_backend_for_host", cached)  # noqa: B010
    keep_alive_servers()  # as the parent's (devstack.aws, announced there)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=ns.port, verbose=False)
    server.start()
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sys.stdin.buffer.read()  # until the parent closes the pipe (or dies)
    with contextlib.suppress(Exception):
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
