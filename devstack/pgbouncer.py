"""The local stand-in for RDS Proxy: Debian's pgbouncer in transaction mode, TLS only.

In AWS every service function reaches PostgreSQL through RDS Proxy; a direct connection
works in places where the proxy refuses (catalogue F16 in our own project). So the local run
puts a real pooling proxy in the same place and configures it to refuse what RDS Proxy refuses:

- **TLS required** from clients (``require_tls``), with a certificate from the run's CA, so
  the functions connect with ``verify-full`` exactly as deployed (only the bundle path differs);
- **startup options refused**: RDS Proxy answers "RDS Proxy currently doesn't support
  command-line options"; pgbouncer refuses every startup parameter it does not track
  (``ignore_startup_parameters`` left empty), ``options`` included;
- **transaction pooling**: a server connection serves one client only for one transaction, so
  session state (``SET``, protocol-level prepared statements) does not survive between
  transactions. RDS Proxy pins the session instead (multiplexing lost); pgbouncer 1.18 fails
  the statement, which turns the same regression into a red test;
- **TLS to the database** with ``verify-full`` (RDS Proxy to RDS), and logins checked against
  PostgreSQL itself (``auth_query``), so a rotated password takes effect at once.

What stays different is IAM authentication: the functions present a password from a local
secret where AWS takes an IAM token (docs/aws-fidelity.md).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg.conninfo import make_conninfo

from devstack.postgres import (
    LOOPBACK,
    SERVICE_USER,
    PostgresSettings,
    free_loopback_port,
    server_env,
    service_account,
)
from devstack.tls import LocalCertificateAuthority, hand_over

INSTALL_HINT = "install pgbouncer: `apt-get install pgbouncer` on Debian/Ubuntu"
_SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
ADMIN_DATABASE = "pgbouncer"  # pgbouncer's admin console (SHOW, KILL, RESUME)


class PgBouncerNotFound(RuntimeError):
    """No pgbouncer binary on this machine."""


class PgBouncerStartError(RuntimeError):
    """pgbouncer did not start or did not accept a TLS connection in time."""


def find_pgbouncer() -> Path:
    found = shutil.which("pgbouncer") or next(
        (str(Path(d) / "pgbouncer") for d in _SEARCH_PATH if (Path(d) / "pgbouncer").is_file()),
        None,
    )
    if found is None:
        raise PgBouncerNotFound(
            f"no pgbouncer binary on PATH or in {', '.join(_SEARCH_PATH)}; to run the local stack "
            f"and its tests, {INSTALL_HINT} (make's bootstrap does it when run as root)."
        )
    return Path(found)


@dataclass(frozen=True)
class ProxySettings:
    """How clients reach the local proxy (the stand-in for the RDS Proxy endpoint)."""

    host: str
    port: int
    dbname: str
    sslrootcert: str  # the run's CA bundle: what verifies the proxy's certificate


class LocalPgBouncer:
    """pgbouncer on 127.0.0.1 in front of a running ``LocalPostgres``.

    ``pool_size`` plays the proxy's connection budget (``MaxConnectionsPercent`` of the
    instance's ``max_connections``): the most server connections it opens to PostgreSQL.
    """

    def __init__(
        self,
        postgres: PostgresSettings,
        ca: LocalCertificateAuthority,
        *,
        pool_size: int = 20,
        max_client_conn: int = 500,
        startup_timeout_s: float = 15.0,
    ) -> None:
        self.postgres = postgres
        self.ca = ca
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.startup_timeout_s = startup_timeout_s
        self._root: Path | None = None
        self._pid: int | None = None
        self._settings: ProxySettings | None = None
        self._account = service_account()

    @property
    def settings(self) -> ProxySettings:
        if self._settings is None:
            raise RuntimeError("LocalPgBouncer is not running; call start() first")
        return self._settings

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs (it detaches: not a child of this process)."""
        return self._pid

    def start(self) -> ProxySettings:
        if self._settings is not None:
            return self._settings
        binary = find_pgbouncer()
        # /tmp: the service account must reach the directory (a TMPDIR under /root it cannot).
        self._root = Path(tempfile.mkdtemp(prefix="orders-pgbouncer-", dir="/tmp"))
        atexit.register(self.stop)
        try:
            port = free_loopback_port()
            config = self._write_config(port)
            self._run(binary, config)
            self._settings = ProxySettings(
                LOOPBACK, port, self.postgres.dbname, str(self.ca.ca_file)
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self._settings

    def stop(self) -> None:
        root, pid = self._root, self._pid
        if pid is None and root is not None and (text := _read(root / "pgbouncer.pid")).strip():
            pid = int(text)  # it started, but start() failed before it read the pid
        self._root = self._pid = self._settings = None
        atexit.unregister(self.stop)
        if pid is not None:
            # SIGINT: pgbouncer's "safe shutdown" waits for clients; SIGTERM drops them at once.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if _wait_gone(pid, 5):
                    break
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for tests and fault injection ---------------------------------------------------

    def conninfo(self, user: str, password: str, **overrides: str | int) -> str:
        """A client's connection string through the proxy (TLS verify-full, as the functions)."""
        settings = self.settings
        params: dict[str, str | int] = {
            "host": settings.host,
            "port": settings.port,
            "dbname": settings.dbname,
            "user": user,
            "password": password,
            "sslmode": "verify-full",
            "sslrootcert": settings.sslrootcert,
            "connect_timeout": 5,
        }
        params.update(overrides)
        return make_conninfo("", **params)

    def admin(self) -> psycopg.Connection:
        """pgbouncer's admin console (simple protocol only, autocommit)."""
        return psycopg.connect(
            self.conninfo(self.postgres.user, self.postgres.password, dbname=ADMIN_DATABASE),
            autocommit=True,
            prepare_threshold=None,
        )

    def drop_client_connections(self) -> None:
        """Close every client connection at once, as an RDS Proxy failover or restart does.

        (``KILL`` also drops the server connections and pauses the database until ``RESUME``.)
        """
        with self.admin() as admin:
            admin.execute(f"KILL {self.postgres.dbname}", prepare=False)
            admin.execute(f"RESUME {self.postgres.dbname}", prepare=False)

    def clients(self) -> list[dict[str, object]]:
        """``SHOW CLIENTS``: one row per client connection (port, tls, application_name...)."""
        with self.admin() as admin:
            return show(admin, "CLIENTS")

    def servers(self) -> list[dict[str, object]]:
        """``SHOW SERVERS``: the proxy's connections to PostgreSQL."""
        with self.admin() as admin:
            return show(admin, "SERVERS")

    # -- steps -----------------------------------------------------------------------------

    def _write_config(self, port: int) -> Path:
        assert self._root is not None
        root = self._root
        server = self.ca.issue_server_certificate("pgbouncer")
        files = {
            "pgbouncer.crt": server.cert_file.read_bytes(),
            "pgbouncer.key": server.key_file.read_bytes(),
            "ca.pem": self.ca.ca_file.read_bytes(),
            # auth_user's own login (the database owner): what runs auth_query.
            "users.txt": f'"{self.postgres.user}" "{self.postgres.password}"\n'.encode(),
        }
        for name, content in files.items():
            (root / name).write_bytes(content)
            (root / name).chmod(0o600)
        pg = self.postgres
        config = root / "pgbouncer.ini"
        config.write_text(
            "; devstack (devstack/pgbouncer.py): refuses what RDS Proxy refuses\n"
            "[databases]\n"
            f"{pg.dbname} = host={pg.host} port={pg.port} dbname={pg.dbname}\n"
            "[pgbouncer]\n"
            f"listen_addr = {LOOPBACK}\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            f"pidfile = {root / 'pgbouncer.pid'}\n"
            f"logfile = {root / 'pgbouncer.log'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            f"max_client_conn = {self.max_client_conn}\n"
            # Every startup parameter pgbouncer does not track is an error, `options` included.
            "ignore_startup_parameters =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {root / 'users.txt'}\n"
            f"auth_user = {pg.user}\n"
            "auth_query = SELECT rolname, CASE WHEN rolcanlogin THEN rolpassword END"
            " FROM pg_authid WHERE rolname = $1\n"
            f"admin_users = {pg.user}\n"
            "client_tls_sslmode = require\n"
            f"client_tls_cert_file = {root / 'pgbouncer.crt'}\n"
            f"client_tls_key_file = {root / 'pgbouncer.key'}\n"
            "server_tls_sslmode = verify-full\n"
            f"server_tls_ca_file = {root / 'ca.pem'}\n"
            # A client waits at most this long for a server connection (RDS Proxy's borrow
            # timeout), then gets an error instead of hanging.
            "query_wait_timeout = 5\n"
            "server_login_retry = 1\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        if self._account is not None:
            hand_over(
                (root, config, *(root / name for name in files)),
                self._account.pw_uid,
                self._account.pw_gid,
            )
        return config

    def _run(self, binary: Path, config: Path) -> None:
        assert self._root is not None
        prefix = ["runuser", "-u", SERVICE_USER, "--"] if self._account is not None else []
        result = subprocess.run(
            [*prefix, str(binary), "--daemon", str(config)],
            cwd=self._root,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.startup_timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise PgBouncerStartError(
                f"pgbouncer failed (exit {result.returncode}): {result.stderr.strip()}\n"
                f"{self._log_tail()}"
            )
        pid_file = self._root / "pgbouncer.pid"
        deadline = time.monotonic() + self.startup_timeout_s
        # The daemon creates the file before it writes the pid: wait for the number itself.
        while not (pid_text := _read(pid_file)).strip().isdigit():
            if time.monotonic() > deadline:
                raise PgBouncerStartError(f"pgbouncer wrote no pid file\n{self._log_tail()}")
            time.sleep(0.02)
        self._pid = int(pid_text)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            try:
                with self.admin() as admin:
                    admin.execute("SHOW VERSION", prepare=False)
                return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise PgBouncerStartError(
                        f"pgbouncer did not accept a TLS connection: {error}\n{self._log_tail()}"
                    ) from error
                time.sleep(0.05)

    def _log_tail(self) -> str:
        if self._root is None:
            return "(no log)"
        try:
            lines = (self._root / "pgbouncer.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "log tail:\n" + "\n".join(lines[-20:])


def show(admin: psycopg.Connection, what: str) -> list[dict[str, object]]:
    """An admin console ``SHOW <what>`` as rows of column name -> value."""
    cur = admin.execute(f"SHOW {what}", prepare=False)
    names = [col.name for col in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _is_zombie(pid):
            return True
        time.sleep(0.02)
    return False


def _is_zombie(pid: int) -> bool:
    """Exited, not yet reaped. The daemon is init's child, and an init that reaps slowly (a
    microVM's took ~1.9 s) kept every stack's stop waiting on a process that had exited."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    return stat[stat.rfind(")") + 2 :].startswith("Z")
