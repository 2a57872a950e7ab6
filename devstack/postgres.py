"""A throwaway PostgreSQL server for the local run and the test suite.

The functions talk to a real PostgreSQL (constraints, locking and password auth behave exactly
as in RDS), so the devstack starts one from the distribution's server binaries instead of
mocking it. Each ``LocalPostgres`` owns a fresh temporary directory and listens only on
127.0.0.1; ``stop()`` (also run at interpreter exit) removes every trace of it.

Like the RDS instance (``rds.force_ssl=1``), it accepts TCP connections over TLS only, with a
certificate from the run's own CA (``devstack.tls``): clients connect with ``verify-full``
against that CA, the way the functions verify RDS in AWS against the shipped bundle.

Measured on the dev box (PostgreSQL 15.18, 2 vCPU shared with other jobs): initdb 0.85-1.0 s,
``pg_ctl start`` 0.12 s, first password connection plus ``CREATE DATABASE`` 0.06-0.14 s; 1.1-1.3 s
from ``start()`` to settings. ``LocalPostgres.timings`` records the figures of each run.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.tls import LocalCertificateAuthority, hand_over

logger = logging.getLogger(__name__)

MIN_MAJOR_VERSION = 14
"""scram-sha-256 as the default password encryption and ``initdb --no-instructions`` need 14+."""

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
"""Where Debian/Ubuntu install versioned server binaries (``<root>/<major>/bin``)."""

INSTALL_HINT = (
    "install the PostgreSQL server: `apt-get install postgresql` on Debian/Ubuntu, "
    "`dnf install postgresql-server` on Fedora/RHEL, `brew install postgresql` on macOS"
)

LOOPBACK = "127.0.0.1"
DEFAULT_MAX_CONNECTIONS = 100
SERVICE_USER = "postgres"  # postgres refuses to run as root; the distro's account is used
_LOG_TAIL_LINES = 40
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class PostgresNotFound(RuntimeError):
    """No usable PostgreSQL server binaries (initdb, pg_ctl) on this machine."""


class PostgresStartError(RuntimeError):
    """The server could not be initialised or did not accept connections in time."""


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres`` of one server version."""

    bindir: Path
    version: str
    major: int

    @property
    def initdb(self) -> Path:
        return self.bindir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.bindir / "pg_ctl"


@dataclass(frozen=True)
class PostgresSettings:
    """How to reach the application database of a running ``LocalPostgres``."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    # The CA bundle that verifies the server (the run's own CA): TLS verify-full, as in AWS.
    sslrootcert: str = ""

    def conninfo(self, **overrides: str | int) -> str:
        """A libpq connection string with TLS ``verify-full`` against the run's CA."""
        params: dict[str, str | int] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "password": self.password,
            "sslmode": "verify-full",
            "sslrootcert": self.sslrootcert,
            "connect_timeout": 5,
        }
        params.update(overrides)
        return make_conninfo("", **params)

    def env(self) -> dict[str, str]:
        """The ``DB_*`` variables of docs/architecture.md (the password travels as a secret)."""
        return {
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_NAME": self.dbname,
            "DB_USER": self.user,
            "DB_SSLMODE": "verify-full",
            "DB_SSLROOTCERT": self.sslrootcert,
        }

    def as_user(self, user: str, password: str) -> PostgresSettings:
        """The same server and database, another login."""
        return replace(self, user=user, password=password)

    def secret_string(self) -> str:
        """The Secrets Manager value for ``DB_AUTH=secret``: ``{"username", "password"}``."""
        return json.dumps({"username": self.user, "password": self.password})


# --------------------------------------------------------------------------- discovery


def _binaries_in(bindir: Path) -> PostgresBinaries | None:
    """The binaries in ``bindir`` with their version, or None when it is not a server bindir."""
    initdb, pg_ctl = bindir / "initdb", bindir / "pg_ctl"
    if not (os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK)):
        return None
    try:
        out = subprocess.run(
            [str(initdb), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    if match is None:
        return None
    return PostgresBinaries(bindir=bindir, version=out.strip(), major=int(match.group(1)))


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _path_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    # Resolve symlinks (/usr/local/bin/initdb -> .../15/bin/initdb): pg_ctl and postgres
    # must come from the same directory as initdb.
    return Path(initdb).resolve().parent if initdb else None


def _debian_bindirs() -> list[Path]:
    def major(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else -1

    return [Path(p) for p in sorted(glob.glob(str(DEBIAN_PG_ROOT / "*" / "bin")), key=major)][::-1]


def find_postgres_binaries(min_major: int = MIN_MAJOR_VERSION) -> PostgresBinaries:
    """Locate server binaries: ``pg_config --bindir``, then PATH, then the Debian layout.

    The first candidate holding ``initdb`` and ``pg_ctl`` of at least ``min_major`` wins;
    older ones are skipped (and named in the error if nothing newer exists).
    """
    candidates: list[Path] = []
    for bindir in (_pg_config_bindir(), _path_bindir(), *_debian_bindirs()):
        if bindir is not None and bindir not in candidates:
            candidates.append(bindir)
    too_old: list[str] = []
    for bindir in candidates:
        found = _binaries_in(bindir)
        if found is None:
            continue
        if found.major >= min_major:
            return found
        too_old.append(f"{bindir} ({found.version})")
    detail = f"; too old: {', '.join(too_old)}" if too_old else ""
    raise PostgresNotFound(
        f"no PostgreSQL >= {min_major} server binaries (initdb, pg_ctl) found via pg_config, "
        f"PATH or {DEBIAN_PG_ROOT}/*/bin{detail}. To run the devstack and its tests, "
        f"{INSTALL_HINT}."
    )


# --------------------------------------------------------------------------- helpers


def free_loopback_port() -> int:
    # The port can in theory be taken between close() and the server's bind; start() retries
    # with a fresh port when the log says so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _traversable_by(path: Path, account: pwd.struct_passwd) -> bool:
    """True when ``account`` can reach ``path`` (every ancestor has the matching x bit)."""
    for ancestor in [path, *path.parents]:
        st = ancestor.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def service_account() -> pwd.struct_passwd | None:
    """The account the servers run as when we are root (PostgreSQL and pgbouncer refuse root);
    None when we are not root and they run as us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresStartError(
            f"running as root, but there is no '{SERVICE_USER}' user to run the servers "
            f"as (PostgreSQL and pgbouncer refuse to run as root); {INSTALL_HINT} (it creates "
            "the user) or run as an unprivileged user"
        ) from None


def server_env() -> dict[str, str]:
    # Stray PGDATA/PGPORT/PGHOST from the caller's shell must not steer the throwaway server.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


# --------------------------------------------------------------------------- server


class LocalPostgres:
    """Start a throwaway PostgreSQL on 127.0.0.1 with password (scram-sha-256) auth.

    Use as a context manager or call ``start()``/``stop()``::

        with LocalPostgres() as pg:
            psycopg.connect(pg.settings.conninfo())
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        dbname: str = "orders",
        user: str = "postgres",
        startup_timeout_s: float = 30.0,
        base_dir: Path | None = None,
        binaries: PostgresBinaries | None = None,
        ca: LocalCertificateAuthority | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.dbname = dbname
        self.user = user
        self.startup_timeout_s = startup_timeout_s
        self._base_dir = base_dir
        self._binaries = binaries
        # None: the server makes its own CA in its directory (a test's standalone server).
        self._ca = ca
        self._password = secrets.token_urlsafe(24)
        self._root: Path | None = None
        self._settings: PostgresSettings | None = None
        self._account: pwd.struct_passwd | None = None
        self.timings: dict[str, float] = {}

    # -- public API ------------------------------------------------------------------

    @property
    def settings(self) -> PostgresSettings:
        if self._settings is None:
            raise RuntimeError("LocalPostgres is not running; call start() first")
        return self._settings

    @property
    def root_dir(self) -> Path | None:
        """The temporary directory (data, socket, log) while running, else None."""
        return self._root

    @property
    def ca(self) -> LocalCertificateAuthority:
        """The CA whose bundle verifies this server (``settings.sslrootcert``)."""
        if self._ca is None:
            raise RuntimeError("LocalPostgres is not running; call start() first")
        return self._ca

    @property
    def startup_seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def start(self) -> PostgresSettings:
        """Initialise, start and wait for the server; create the application database."""
        if self._settings is not None:
            return self._settings
        t0 = time.perf_counter()
        binaries = self._binaries = self._binaries or find_postgres_binaries()
        self._account = service_account()
        self._root = self._make_root()
        # Registered before anything can fail, so an interrupted start leaves nothing behind.
        atexit.register(self.stop)
        try:
            t1 = time.perf_counter()
            self._initdb(binaries)
            t2 = time.perf_counter()
            port = self._start_server(binaries)
            t3 = time.perf_counter()
            self._settings = self._wait_ready_and_create_db(port)
        except BaseException:
            self.stop()
            raise
        t4 = time.perf_counter()
        self.timings = {
            "discover": t1 - t0,
            "initdb": t2 - t1,
            "server_start": t3 - t2,
            "ready_and_createdb": t4 - t3,
            "total": t4 - t0,
        }
        logger.info(
            "PostgreSQL %s ready on %s:%d in %.2fs (initdb %.2fs)",
            binaries.major,
            LOOPBACK,
            port,
            self.timings["total"],
            self.timings["initdb"],
        )
        return self._settings

    def stop(self) -> None:
        """Shut the server down at once and delete its directory; safe to call twice."""
        root = self._root
        if root is None:
            return
        self._root = None
        self._settings = None
        atexit.unregister(self.stop)
        try:
            self._stop_server(root / "data")
        finally:
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

    # -- steps -----------------------------------------------------------------------

    def _make_root(self) -> Path:
        base = self._base_dir or Path(tempfile.gettempdir())
        account = self._account
        if account is not None and not _traversable_by(base, account):
            # e.g. TMPDIR under /root (0700): the postgres user could not reach its data dir.
            fallback = Path("/tmp")  # noqa: S108 - world-traversable; the dir itself is 0700
            if self._base_dir is not None or not _traversable_by(fallback, account):
                raise PostgresStartError(
                    f"{base} is not traversable by the '{account.pw_name}' user; "
                    "pass base_dir= a directory it can reach"
                )
            base = fallback
        root = Path(tempfile.mkdtemp(prefix="orders-pg-", dir=base))
        (root / "sock").mkdir()
        if account is not None:
            for path in (root, root / "sock"):
                os.chown(path, account.pw_uid, account.pw_gid)
        return root

    def _run(
        self, args: list[str], *, cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", SERVICE_USER, "--"] if self._account is not None else []
        return subprocess.run(
            [*prefix, *args],
            cwd=cwd,  # the service user may not be able to read the caller's cwd
            env=server_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _initdb(self, binaries: PostgresBinaries) -> None:
        assert self._root is not None
        pwfile = self._root / "pwfile"
        pwfile.write_text(self._password + "\n")
        pwfile.chmod(0o600)
        if self._account is not None:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)
        try:
            result = self._run(
                [
                    str(binaries.initdb),
                    "--pgdata",
                    str(self._root / "data"),
                    "--username",
                    self.user,
                    "--pwfile",
                    str(pwfile),
                    # scram for local and host lines: the suite really exercises password auth,
                    # as the functions do against RDS Proxy.
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",  # throwaway data, see _configure
                    "--no-instructions",
                ],
                cwd=self._root,
                timeout=self.startup_timeout_s,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresStartError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        self._configure()

    def _configure(self) -> None:
        assert self._root is not None
        data = self._root / "data"
        if self._ca is None:
            self._ca = LocalCertificateAuthority(self._root / "ca")
        server = self._ca.issue_server_certificate("postgres")
        # Inside the data directory, owned by the server's account: PostgreSQL checks the key.
        cert_file, key_file = data / "server.crt", data / "server.key"
        cert_file.write_bytes(server.cert_file.read_bytes())
        key_file.write_bytes(server.key_file.read_bytes())
        key_file.chmod(0o600)
        if self._account is not None:
            hand_over((cert_file, key_file), self._account.pw_uid, self._account.pw_gid)
        # rds.force_ssl=1: TCP clients must use TLS; anything else is refused, as in RDS.
        (data / "pg_hba.conf").write_text(
            "# devstack (devstack/postgres.py): TLS only over TCP, like rds.force_ssl\n"
            "local     all all              scram-sha-256\n"
            f"hostssl   all all {LOOPBACK}/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0    reject\n"
        )
        conf = data / "postgresql.conf"
        # Appended settings override the defaults above them (last one wins).
        with conf.open("a") as f:
            f.write(
                "\n# --- devstack (devstack/postgres.py) ---\n"
                f"listen_addresses = '{LOOPBACK}'\n"
                f"unix_socket_directories = '{self._root / 'sock'}'\n"
                f"max_connections = {self.max_connections}\n"
                # Durability is pointless for a database deleted at exit; skipping the
                # flushes makes the suite's many small commits several times faster.
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "password_encryption = 'scram-sha-256'\n"
                "ssl = on\n"
                "ssl_cert_file = 'server.crt'\n"
                "ssl_key_file = 'server.key'\n"
                "ssl_min_protocol_version = 'TLSv1.2'\n"
            )

    def _start_server(self, binaries: PostgresBinaries) -> int:
        assert self._root is not None
        log = self._root / "server.log"
        for _attempt in range(3):
            port = free_loopback_port()
            result = self._run(
                [
                    str(binaries.pg_ctl),
                    "start",
                    "--pgdata",
                    str(self._root / "data"),
                    "--log",
                    str(log),
                    "--wait",
                    "--timeout",
                    str(max(1, int(self.startup_timeout_s))),
                    "-o",
                    f"-p {port}",
                ],
                cwd=self._root,
                timeout=self.startup_timeout_s + 5,
            )
            if result.returncode == 0:
                return port
            if "could not bind" not in self._log_tail():
                break  # not a port race: retrying would only hide the real error
            logger.warning("port %d was taken before PostgreSQL bound it; retrying", port)
        raise PostgresStartError(
            f"pg_ctl start failed (exit {result.returncode}): {result.stderr.strip()}\n"
            f"server log tail:\n{self._log_tail()}"
        )

    def _wait_ready_and_create_db(self, port: int) -> PostgresSettings:
        sslrootcert = str(self.ca.ca_file)
        admin = PostgresSettings(LOOPBACK, port, "postgres", self.user, self._password, sslrootcert)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            try:
                conn = psycopg.connect(admin.conninfo(connect_timeout=2), autocommit=True)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise PostgresStartError(
                        f"PostgreSQL on {LOOPBACK}:{port} did not accept a connection within "
                        f"{self.startup_timeout_s:.0f}s: {exc}\n"
                        f"server log tail:\n{self._log_tail()}"
                    ) from exc
                time.sleep(0.05)
        with conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        return PostgresSettings(LOOPBACK, port, self.dbname, self.user, self._password, sslrootcert)

    def _stop_server(self, data: Path) -> None:
        pid_file = data / "postmaster.pid"
        if not pid_file.exists():
            return
        if self._binaries is not None:
            # immediate: no checkpoint, no waiting for clients; the data is discarded anyway.
            result = self._run(
                [
                    str(self._binaries.pg_ctl),
                    *("stop", "--pgdata", str(data), "-m", "immediate", "--wait"),
                ],
                cwd=data.parent,
                timeout=30,
            )
            if result.returncode == 0:
                return
            logger.warning("pg_ctl stop failed: %s", result.stderr.strip())
        self._kill_postmaster(pid_file)

    @staticmethod
    def _kill_postmaster(pid_file: Path) -> None:
        """Last resort: signal the postmaster directly (SIGQUIT is its immediate shutdown)."""
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def _log_tail(self) -> str:
        if self._root is None:
            return "(no log)"
        try:
            lines = (self._root / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_LOG_TAIL_LINES:])
