"""PostgreSQL drivers for the functions: psycopg (binary, what we ship) against pg8000 (pure
Python, TLS through the standard library's ``ssl``) (issue 12, ADR 0011).

``python -m benchmarks.driver [--runs 15] [--iterations 500] [--json]``

For each driver:

* **size for Lambda**: ``pip install`` of the driver with its dependencies into a temporary
  directory the way ``infra.bundling.build_layer`` installs the layer (manylinux aarch64 wheels
  for CPython 3.13, bytecode compiled alike), unzipped and zipped; the distributions that are
  new to our layer (not in functions/requirements.lock); and the synthesized layer rebuilt
  with this driver in place of psycopg (needs ``make synth-dev``);
* **cold import**: a fresh ``python3.13 -I -S`` importing the driver from a native install
  (``.build/driver-*``), alternating with the yardstick B of ``benchmarks.cold_init`` (a fresh
  interpreter running ``import boto3; boto3.client("sqs")``), and the driver imported after B
  in the same interpreter: what a function that has already loaded boto3 (all of ours) adds.
  Interpreter start-up is left out of all three. pg8000 loads ``ssl`` only when it connects;
  its probe imports ``ssl`` too, so both figures include the TLS code;
* **cold first query**: a fresh interpreter importing the driver, connecting with TLS
  verify-full and running one parameterized SELECT, what an environment's first invocation pays;
* **connect and per-query latency**, in this process, against a throwaway PostgreSQL started
  by ``devstack.postgres`` (TLS only, verify-full against the run's CA), directly and through
  the local RDS Proxy stand-in (``devstack.pgbouncer``, transaction pooling), both as an
  application role with a SCRAM password: connect (TCP, TLS handshake, SCRAM), ``SELECT 1``, a
  parameterized single-row SELECT and UPDATE, and one saga step shaped like
  ``orders_repository.confirm_order`` (BEGIN, lock the row, UPDATE, INSERT an event, COMMIT).
  Median and p95; the drivers alternate in blocks so the machine's load hits both alike;
* **round trips** per connect, query and step, counted by a TCP relay between the driver and
  PostgreSQL (a round trip is a client flight that follows a server flight). On loopback one
  costs tens of microseconds; between a function and RDS Proxy it costs a network round trip;
* **what the project relies on**, checked live: the error a ``statement_timeout`` raises, what
  a killed connection raises, no prepared statement left in the session, verify-full refusing
  another CA, the proxy accepting the driver's startup packet, and autocommit statements
  under transaction pooling (four clients, one server connection).

Numbers only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import psycopg
from packaging.markers import Marker
from packaging.utils import canonicalize_name
from psycopg import sql

from benchmarks import assets, lambda_image
from devstack.pgbouncer import LocalPgBouncer
from devstack.postgres import LocalPostgres
from devstack.tls import LocalCertificateAuthority
from infra.bundling import BUILD_DIR, LOCK_FILE, compile_unchecked
from infra.config import LAMBDA_PIP_PLATFORMS, LAMBDA_PYTHON_VERSION
from infra.service import this_service

YARDSTICK: Final = "import boto3; boto3.client('sqs', region_name='eu-west-1')"
APPLICATION_NAME: Final = this_service().name
CONNECT_TIMEOUT_S: Final = 5
ROWS: Final = 100
BLOCKS: Final = 10  # each workload's iterations are split in blocks, drivers alternating
ROUND_TRIP_ITERATIONS: Final = 50

# Identical SQL for both drivers: pg8000's DB-API paramstyle is "format" (%s), as psycopg's.
WORKLOADS: Final = {
    "select_1": "SELECT 1",
    "select_row": "SELECT status, counter FROM bench_items WHERE id = %s",
    "update_row": "UPDATE bench_items SET counter = counter + 1 WHERE id = %s RETURNING counter",
    "step": "BEGIN; SELECT .. FOR UPDATE; UPDATE; INSERT event; COMMIT",
}
_STEP_LOCK: Final = "SELECT status FROM bench_items WHERE id = %s FOR UPDATE"
_STEP_UPDATE: Final = (
    "UPDATE bench_items SET counter = counter + 1, updated_at = now() WHERE id = %s"
)
_STEP_EVENT: Final = "INSERT INTO bench_events (item_id, event, detail) VALUES (%s, %s, %s::jsonb)"
_SCHEMA: Final = (
    "CREATE TABLE bench_items (id int PRIMARY KEY, status text NOT NULL,"
    " counter int NOT NULL DEFAULT 0, updated_at timestamptz NOT NULL DEFAULT now())",
    f"INSERT INTO bench_items (id, status) SELECT g, 'PAID' FROM generate_series(1, {ROWS}) g",
    "CREATE TABLE bench_events (id bigserial PRIMARY KEY,"
    " item_id int NOT NULL REFERENCES bench_items, event text NOT NULL, detail jsonb NOT NULL,"
    " at timestamptz NOT NULL DEFAULT now())",
)
_LOCK_LINE: Final = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*(.+?))?\s*\\?\s*$"
)
# Where pip evaluates the lock's markers when it builds the layer (tests/catalogue/test_f16).
_LAMBDA_MARKERS: Final = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "aarch64" if "aarch64" in LAMBDA_PIP_PLATFORMS[0] else "x86_64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "python_version": LAMBDA_PYTHON_VERSION,
    "python_full_version": f"{LAMBDA_PYTHON_VERSION}.0",
}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Timing:
    n: int
    median_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def of(cls, ms: Sequence[float]) -> Timing:
        ordered = sorted(ms)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(
            n=len(ordered),
            median_ms=round(statistics.median(ordered), 3),
            p95_ms=round(p95, 3),
            min_ms=round(ordered[0], 3),
            max_ms=round(ordered[-1], 3),
        )


@dataclass(frozen=True)
class InstallSize:
    requirement: str
    unzipped_bytes: int
    zipped_bytes: int
    files: int
    distributions: dict[str, int]  # unzipped bytes, largest first
    new_to_layer: dict[str, int]  # the distributions functions/requirements.lock lacks


@dataclass(frozen=True)
class LayerWith:
    """The synthesized layer with a driver's distributions in place of psycopg's."""

    unzipped_bytes: int
    zipped_bytes: int
    files: int


@dataclass(frozen=True)
class ColdImport:
    alone: Timing
    after_boto3: Timing
    ratio_to_yardstick: float  # median alone / median B
    modules: int
    modules_added_after_boto3: int


@dataclass(frozen=True)
class DriverResult:
    name: str
    versions: dict[str, str]
    size: InstallSize | None
    layer_with: LayerWith | None
    cold_import: ColdImport | None
    first_query: dict[str, Timing]  # import, connect, query, total
    latency: dict[str, dict[str, Timing]]  # endpoint -> connect or workload -> timing
    round_trips: dict[str, float]  # connect or workload -> client turns


@dataclass(frozen=True)
class Check:
    name: str
    question: str
    results: dict[str, str]


@dataclass(frozen=True)
class DriverComparison:
    runs: int
    iterations: int
    yardstick: Timing | None
    yardstick_modules: int
    layer: LayerWith | None  # the synthesized layer as it is
    drivers: dict[str, DriverResult]
    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "yardstick": YARDSTICK,
            "workloads": dict(WORKLOADS),
            **asdict(self),
        }

    def lines(self) -> list[str]:  # noqa: PLR0912, PLR0915 - one report, read top to bottom
        names = list(self.drivers)
        out = [
            "PostgreSQL drivers: "
            + "; ".join(
                f"{d.name} " + ", ".join(f"{k} {v}" for k, v in d.versions.items())
                for d in self.drivers.values()
            )
        ]
        out.append("")
        out.append("size for Lambda (manylinux aarch64, cp313, with dependencies and bytecode)")
        for d in self.drivers.values():
            if d.size is None:
                out.append(f"  {d.name:<8} not measured (see notes)")
                continue
            s = d.size
            dists = ", ".join(f"{k} {assets.mb(v)}" for k, v in s.distributions.items())
            new = ", ".join(s.new_to_layer) or "none"
            out.append(
                f"  {d.name:<8} {assets.mb(s.unzipped_bytes):>9} unzipped "
                f"{assets.mb(s.zipped_bytes):>9} zipped {s.files:5d} files: {dists}"
            )
            out.append(
                f"  {'':<8} new to our layer: {new} "
                f"({assets.mb(sum(s.new_to_layer.values()))} unzipped)"
            )
        if self.layer is not None:
            out.append(
                f"  layer as synthesized:  {assets.mb(self.layer.unzipped_bytes):>9} unzipped "
                f"{assets.mb(self.layer.zipped_bytes):>9} zipped {self.layer.files:5d} files"
            )
            for d in self.drivers.values():
                if d.layer_with is not None and d.name != "psycopg":
                    lw = d.layer_with
                    out.append(
                        f"  layer with {d.name:<8}    {assets.mb(lw.unzipped_bytes):>9} unzipped "
                        f"{assets.mb(lw.zipped_bytes):>9} zipped {lw.files:5d} files"
                    )
        out.append("")
        if self.yardstick is not None:
            y = self.yardstick
            out.append(
                f"cold import, fresh python3.13 -I -S, {self.runs} alternating runs "
                f"(median, min-max ms); B = `{YARDSTICK}`: {y.median_ms:.1f} "
                f"({y.min_ms:.1f}-{y.max_ms:.1f}), {self.yardstick_modules} modules"
            )
            for d in self.drivers.values():
                c = d.cold_import
                if c is None:
                    out.append(f"  {d.name:<8} not measured (see notes)")
                    continue
                out.append(
                    f"  {d.name:<8} alone {c.alone.median_ms:6.1f} "
                    f"({c.alone.min_ms:.1f}-{c.alone.max_ms:.1f}) = "
                    f"{c.ratio_to_yardstick:.2f} x B, "
                    f"{c.modules} modules; after boto3 +{c.after_boto3.median_ms:.1f} "
                    f"({c.after_boto3.min_ms:.1f}-{c.after_boto3.max_ms:.1f}), "
                    f"+{c.modules_added_after_boto3} modules"
                )
        out.append("")
        out.append(
            "cold first query, fresh interpreter: import + connect (TLS verify-full) + one "
            "parameterized SELECT (median, p95 ms)"
        )
        for d in self.drivers.values():
            parts = ", ".join(
                f"{k} {t.median_ms:.1f} ({t.p95_ms:.1f})" for k, t in d.first_query.items()
            )
            out.append(f"  {d.name:<8} {parts}")
        out.append("")
        endpoints = [
            e for e in ("postgres", "proxy") if all(e in d.latency for d in self.drivers.values())
        ]
        for endpoint in endpoints:
            where = (
                "PostgreSQL directly" if endpoint == "postgres" else "the local proxy (pgbouncer)"
            )
            out.append(
                f"latency through {where}, TLS verify-full, median / p95 ms "
                f"({self.iterations} iterations per query)"
            )
            out.append(
                f"  {'':<12}"
                + "".join(f"{n:>18}" for n in names)
                + "".join(f"{'x ' + n:>10}" for n in names[1:])
            )
            for what in ("connect", *WORKLOADS):
                row = [self.drivers[n].latency[endpoint][what] for n in names]
                cells = "".join(f"{t.median_ms:>9.3f} / {t.p95_ms:<6.3f}" for t in row)
                ratios = "".join(
                    f"{t.median_ms / row[0].median_ms:>10.2f}" if row[0].median_ms else ""
                    for t in row[1:]
                )
                out.append(f"  {what:<12}{cells}{ratios}")
            out.append("")
        out.append("round trips (client turns counted by a relay)")
        out.append(f"  {'':<12}" + "".join(f"{n:>10}" for n in names))
        for what in ("connect", *WORKLOADS):
            out.append(
                f"  {what:<12}"
                + "".join(f"{self.drivers[n].round_trips.get(what, 0.0):>10.1f}" for n in names)
            )
        out.append("")
        out.append("what the project relies on (live checks)")
        for check in self.checks:
            out.append(f"  {check.name}: {check.question}")
            for name, result in check.results.items():
                out.append(f"    {name:<8} {result}")
        if self.notes:
            out.append("")
            out.append("notes")
            out.extend(f"  {note}" for note in self.notes)
        return out


# --------------------------------------------------------------------------- drivers


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    dbname: str
    user: str
    password: str = field(repr=False)
    ca: str


class Client(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def requirement(self) -> str: ...
    @property
    def imports(self) -> tuple[str, ...]: ...

    def versions(self) -> dict[str, str]: ...
    def connect(self, ep: Endpoint, *, autocommit: bool) -> Any: ...
    def run(self, conn: Any, workload: str, key: int) -> None: ...
    def execute(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> None: ...
    def fetch_one(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any: ...
    def describe(self, error: BaseException) -> str: ...
    def rollback(self, conn: Any) -> None: ...


class PsycopgClient:
    """What ``orders_saga.adapters.database.Database`` does, parameter for parameter."""

    name: Final = "psycopg"
    imports: Final[tuple[str, ...]] = ("psycopg",)

    @property
    def requirement(self) -> str:
        return f"psycopg[binary]=={importlib.metadata.version('psycopg')}"

    def versions(self) -> dict[str, str]:
        return {
            "psycopg": importlib.metadata.version("psycopg"),
            "psycopg-binary": importlib.metadata.version("psycopg-binary"),
            "libpq": str(psycopg.pq.version()),
            "implementation": psycopg.pq.__impl__,
        }

    def connect(self, ep: Endpoint, *, autocommit: bool) -> Any:
        return psycopg.connect(
            host=ep.host,
            port=ep.port,
            dbname=ep.dbname,
            user=ep.user,
            password=ep.password,
            connect_timeout=CONNECT_TIMEOUT_S,
            sslmode="verify-full",
            sslrootcert=ep.ca,
            application_name=APPLICATION_NAME,
            prepare_threshold=None,
            autocommit=autocommit,
        )

    def run(self, conn: Any, workload: str, key: int) -> None:
        if workload == "step":
            with conn.transaction():
                conn.execute(_STEP_LOCK, (key,)).fetchone()
                conn.execute(_STEP_UPDATE, (key,))
                conn.execute(_STEP_EVENT, (key, "CONFIRMED", '{"step": "confirm"}'))
        elif workload == "select_1":
            conn.execute(WORKLOADS[workload]).fetchall()
        else:
            conn.execute(WORKLOADS[workload], (key,)).fetchall()

    def execute(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> None:
        conn.execute(query, params)

    def fetch_one(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
        return conn.execute(query, params).fetchone()

    def describe(self, error: BaseException) -> str:
        code = getattr(error, "sqlstate", None)
        return f"{type(error).__module__}.{type(error).__qualname__} (SQLSTATE {code})"

    def rollback(self, conn: Any) -> None:
        conn.rollback()


class Pg8000Client:
    """pg8000's DB-API with verify-full as the stdlib does it: a context with the CA bundle
    only (``create_default_context(cafile=...)`` loads no default store), certificate and
    host name checked.

    pg8000 leaves Nagle's algorithm on; its startup then waits on the peer's delayed ACK
    (about 40 ms per connect here, the ``tcp_nodelay`` check). A port would hand it a socket of
    its own with TCP_NODELAY, as libpq sets it, so that is what is measured unless
    ``nodelay=False``.
    """

    name: Final = "pg8000"
    imports: Final[tuple[str, ...]] = ("ssl", "pg8000.dbapi")

    def __init__(self, *, nodelay: bool = True) -> None:
        self.nodelay = nodelay

    @property
    def requirement(self) -> str:
        return f"pg8000=={importlib.metadata.version('pg8000')}"

    def versions(self) -> dict[str, str]:
        return {
            "pg8000": importlib.metadata.version("pg8000"),
            "scramp": importlib.metadata.version("scramp"),
            "ssl": ssl.OPENSSL_VERSION,
        }

    def connect(self, ep: Endpoint, *, autocommit: bool) -> Any:
        import pg8000.dbapi  # type: ignore[import-untyped]

        context = ssl.create_default_context(cafile=ep.ca)
        sock = None
        if self.nodelay:
            # A socket timeout: it bounds the connect and every later read too.
            sock = socket.create_connection((ep.host, ep.port), CONNECT_TIMEOUT_S)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = pg8000.dbapi.connect(
            user=ep.user,
            host=ep.host,  # still needed: the certificate's host name is checked against it
            port=ep.port,
            database=ep.dbname,
            password=ep.password,
            ssl_context=context,
            timeout=CONNECT_TIMEOUT_S,
            application_name=APPLICATION_NAME,
            sock=sock,
        )
        conn.autocommit = autocommit
        return conn

    def run(self, conn: Any, workload: str, key: int) -> None:
        cur = conn.cursor()
        if workload == "step":
            try:
                cur.execute(_STEP_LOCK, (key,))
                cur.fetchone()
                cur.execute(_STEP_UPDATE, (key,))
                cur.execute(_STEP_EVENT, (key, "CONFIRMED", '{"step": "confirm"}'))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        elif workload == "select_1":
            cur.execute(WORKLOADS[workload])
            cur.fetchall()
        else:
            cur.execute(WORKLOADS[workload], (key,))
            cur.fetchall()

    def execute(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> None:
        conn.cursor().execute(query, params)

    def fetch_one(self, conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
        cur = conn.cursor()
        cur.execute(query, params)
        return cur.fetchone()

    def describe(self, error: BaseException) -> str:
        detail = error.args[0] if error.args else None
        code = detail.get("C") if isinstance(detail, dict) else None
        return f"{type(error).__module__}.{type(error).__qualname__} (SQLSTATE {code})"

    def rollback(self, conn: Any) -> None:
        conn.rollback()


def clients() -> list[Client]:
    return [PsycopgClient(), Pg8000Client()]


# --------------------------------------------------------------------------- sizes


def locked(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """name -> version of every lock entry that applies on Lambda (what the layer holds)."""
    found: dict[str, str] = {}
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        match = _LOCK_LINE.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate(_LAMBDA_MARKERS):
            continue
        found[str(canonicalize_name(name))] = version
    return found


def write_constraints(directory: Path) -> Path:
    """The lock's versions as pip constraints: a driver's dependencies that the layer already
    holds resolve to the layer's versions (python-dateutil stays 2.9, as botocore needs)."""
    path = directory / "constraints.txt"
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(locked().items())), encoding="utf-8")
    return path


def _compile(root: Path) -> None:
    """Bytecode as build_layer compiles it (the asset is read-only on Lambda, F04)."""
    compile_unchecked(root)


def _pip_install(
    requirement: str, target: Path, platforms: Sequence[str], constraints: Path | None = None
) -> None:
    platform_args = [arg for p in platforms for arg in ("--platform", p)]
    constraint_args = ["--constraint", str(constraints)] if constraints is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--quiet"]
        + ["--disable-pip-version-check", "--no-compile", "--only-binary=:all:"]
        + platform_args
        + (
            ["--implementation", "cp", "--python-version", LAMBDA_PYTHON_VERSION]
            if platforms
            else []
        )
        + constraint_args
        + ["--target", str(target), requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {requirement} failed: {done.stderr.strip()[-600:]}")
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts, as build_layer prunes
    _compile(target)


def _link_tree(source: Path, target: Path, keep: Callable[[Path], bool]) -> None:
    for path in assets.files_of(source):
        relative = path.relative_to(source)
        if not keep(relative):
            continue
        lambda_image.link_or_copy(path, target / relative)


def _layer_with(layer: Path, drop: set[str], add: Path, add_names: set[str]) -> LayerWith:
    """The layer without the ``drop`` distributions and with ``add_names`` from ``add``."""
    site = layer / "python"
    owner_in_layer = assets.distribution_of(site)
    owner_in_add = assets.distribution_of(add)
    with tempfile.TemporaryDirectory(prefix="layer-with-", dir=BUILD_DIR) as tmp:
        target = Path(tmp) / "python"
        _link_tree(site, target, lambda p: canonicalize_name(owner_in_layer(p)) not in drop)
        _link_tree(add, target, lambda p: canonicalize_name(owner_in_add(p)) in add_names)
        size = assets.tree_size(Path(tmp))
    return LayerWith(size.unzipped_bytes, size.zipped_bytes, size.files)


def lambda_sizes(
    drivers: Sequence[Client], layer: Path | None
) -> tuple[dict[str, InstallSize], dict[str, LayerWith], LayerWith | None, list[str]]:
    """Each driver installed for Lambda; the layer with each in place of psycopg."""
    sizes: dict[str, InstallSize] = {}
    layers: dict[str, LayerWith] = {}
    notes: list[str] = []
    in_lock = set(locked())
    current = None
    if layer is not None:
        size = assets.tree_size(layer)
        current = LayerWith(size.unzipped_bytes, size.zipped_bytes, size.files)
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="driver-lambda-", dir=BUILD_DIR) as tmp:
        installed: dict[str, Path] = {}
        constraints = write_constraints(Path(tmp))
        for client in drivers:
            target = Path(tmp) / client.name
            try:
                _pip_install(client.requirement, target, LAMBDA_PIP_PLATFORMS, constraints)
            except RuntimeError as error:
                notes.append(f"{client.name}: size for Lambda not measured, PyPI: {error}")
                continue
            installed[client.name] = target
            per_dist = assets.distribution_sizes(target)
            dists = {str(canonicalize_name(k)): v for k, v in per_dist.most_common()}
            total = assets.tree_size(target)
            sizes[client.name] = InstallSize(
                requirement=client.requirement,
                unzipped_bytes=total.unzipped_bytes,
                zipped_bytes=total.zipped_bytes,
                files=total.files,
                distributions=dists,
                new_to_layer={k: v for k, v in dists.items() if k not in in_lock},
            )
        shipped = sizes.get("psycopg")
        if layer is not None and shipped is not None:
            for name, target in installed.items():
                add = set(sizes[name].distributions) if name != "psycopg" else set()
                drop = set(shipped.distributions) - add
                layers[name] = _layer_with(layer, drop, target, set(sizes[name].new_to_layer))
    return sizes, layers, current, notes


# --------------------------------------------------------------------------- cold import

# Runs in the clean interpreter; the time excludes interpreter start-up.
_IMPORT_PROBE: Final = """
import sys, time
started = time.perf_counter()
sys.path[:0] = [p for p in sys.argv[1].split(":") if p]
mode, targets = sys.argv[2], sys.argv[3]
before = len(sys.modules)
if mode == "after-B":
    import boto3
    boto3.client("sqs", region_name="eu-west-1")
    before = len(sys.modules)
    started = time.perf_counter()
if targets == "B":
    import boto3
    boto3.client("sqs", region_name="eu-west-1")
else:
    for name in targets.split(","):
        __import__(name)
print(time.perf_counter() - started, len(sys.modules), len(sys.modules) - before)
"""

# Import, connect with verify-full, one parameterized SELECT: the first invocation's path.
_FIRST_QUERY_PROBE: Final = """
import json, os, sys, time
t0 = time.perf_counter()
sys.path[:0] = [p for p in sys.argv[1].split(":") if p]
db = json.loads(os.environ["BENCH_DB"])
sql = "SELECT status, counter FROM bench_items WHERE id = %s"
if sys.argv[2] == "psycopg":
    import psycopg
    t1 = time.perf_counter()
    conn = psycopg.connect(
        host=db["host"], port=db["port"], dbname=db["dbname"], user=db["user"],
        password=db["password"], connect_timeout=5, sslmode="verify-full",
        sslrootcert=db["ca"], application_name=db["application_name"], prepare_threshold=None,
    )
    t2 = time.perf_counter()
    conn.execute(sql, (1,)).fetchone()
else:
    import socket, ssl, pg8000.dbapi
    t1 = time.perf_counter()
    context = ssl.create_default_context(cafile=db["ca"])
    sock = socket.create_connection((db["host"], db["port"]), 5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn = pg8000.dbapi.connect(
        user=db["user"], host=db["host"], port=db["port"], database=db["dbname"],
        password=db["password"], ssl_context=context, timeout=5,
        application_name=db["application_name"],
        sock=sock,
    )
    t2 = time.perf_counter()
    cur = conn.cursor()
    cur.execute(sql, (1,))
    cur.fetchone()
t3 = time.perf_counter()
conn.close()
print(json.dumps({"import": t1 - t0, "connect": t2 - t1, "query": t3 - t2, "total": t3 - t0}))
"""


def native_install(client: Client, build_dir: Path = BUILD_DIR) -> Path:
    """The driver and its dependencies for this machine, cached in .build/ like the layer."""
    key = hashlib.sha256(
        f"{client.requirement}\0{sys.version_info[:2]}\0{platform.machine()}".encode()
        + LOCK_FILE.read_bytes()
    ).hexdigest()[:16]
    target = build_dir / f"driver-{client.name}-{key}"
    if target.is_dir():
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="driver-staging-", dir=build_dir))
    try:
        _pip_install(client.requirement, staging / "site", (), write_constraints(staging))
        try:
            (staging / "site").rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _probe_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **lambda_image.RUNTIME_ENVIRONMENT,
        "AWS_EC2_METADATA_DISABLED": "true",
        **(extra or {}),
    }


def _import_run(path: Sequence[Path], mode: str, targets: str) -> tuple[float, int, int]:
    done = subprocess.run(
        [
            lambda_image.interpreter(),
            "-I",
            "-S",
            "-c",
            _IMPORT_PROBE,
            ":".join(map(str, path)),
            mode,
            targets,
        ],
        env=_probe_env(),
        check=False,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing {targets} failed:\n{done.stderr[-2000:]}")
    seconds, modules, added = done.stdout.split()
    return float(seconds) * 1000, int(modules), int(added)


def cold_imports(
    drivers: Sequence[Client], installs: dict[str, Path], runs: int
) -> tuple[dict[str, ColdImport], Timing, int]:
    # boto3 as the runtime has it, and what it needs from our layer (as cold_init's B).
    base = [lambda_image.native_layer(), lambda_image.runtime_standin()]
    targets = {c.name: ",".join(c.imports) for c in drivers}
    alone: dict[str, list[tuple[float, int, int]]] = {c.name: [] for c in drivers}
    after: dict[str, list[tuple[float, int, int]]] = {c.name: [] for c in drivers}
    yardstick: list[tuple[float, int, int]] = []
    # One unmeasured round first: the page cache, not the driver, pays for the first read.
    for c in drivers:
        _import_run([installs[c.name], *base], "alone", targets[c.name])
    _import_run(base, "alone", "B")
    for i in range(runs):
        for c in drivers if i % 2 == 0 else list(reversed(drivers)):
            path = [installs[c.name], *base]
            alone[c.name].append(_import_run(path, "alone", targets[c.name]))
            after[c.name].append(_import_run(path, "after-B", targets[c.name]))
        yardstick.append(_import_run(base, "alone", "B"))
    b = Timing.of([ms for ms, _, _ in yardstick])
    results = {
        name: ColdImport(
            alone=Timing.of([ms for ms, _, _ in alone[name]]),
            after_boto3=Timing.of([ms for ms, _, _ in after[name]]),
            ratio_to_yardstick=round(
                statistics.median(ms for ms, _, _ in alone[name]) / b.median_ms, 2
            ),
            modules=alone[name][0][1],
            modules_added_after_boto3=after[name][0][2],
        )
        for name in alone
    }
    return results, b, yardstick[0][1]


def first_queries(
    drivers: Sequence[Client], installs: dict[str, Path], ep: Endpoint, runs: int
) -> dict[str, dict[str, Timing]]:
    env = _probe_env({"BENCH_DB": json.dumps({**asdict(ep), "application_name": APPLICATION_NAME})})
    samples: dict[str, list[dict[str, float]]] = {c.name: [] for c in drivers}
    for i in range(runs + 1):
        for c in drivers if i % 2 == 0 else list(reversed(drivers)):
            done = subprocess.run(
                [
                    lambda_image.interpreter(),
                    "-I",
                    "-S",
                    "-c",
                    _FIRST_QUERY_PROBE,
                    str(installs[c.name]),
                    c.name,
                ],
                env=env,
                check=False,
                capture_output=True,
                text=True,
                cwd=tempfile.gettempdir(),
            )
            if done.returncode != 0:
                raise RuntimeError(f"{c.name} first query failed:\n{done.stderr[-2000:]}")
            if i > 0:  # the first round warms the page cache
                samples[c.name].append(json.loads(done.stdout))
    parts = ("import", "connect", "query", "total")
    return {
        name: {part: Timing.of([s[part] * 1000 for s in taken]) for part in parts}
        for name, taken in samples.items()
    }


# --------------------------------------------------------------------------- latency


def latency(
    drivers: Sequence[Client], ep: Endpoint, *, iterations: int, connects: int
) -> dict[str, dict[str, Timing]]:
    """Connect time and per-query latency of each driver against one endpoint."""
    connect_ms: dict[str, list[float]] = {c.name: [] for c in drivers}
    for i in range(connects + 1):
        for c in drivers if i % 2 == 0 else list(reversed(drivers)):
            started = time.perf_counter()
            conn = c.connect(ep, autocommit=True)
            elapsed = (time.perf_counter() - started) * 1000
            conn.close()
            if i > 0:
                connect_ms[c.name].append(elapsed)
    conns = {
        c.name: {mode: c.connect(ep, autocommit=mode) for mode in (True, False)} for c in drivers
    }
    per_block = max(1, iterations // BLOCKS)
    query_ms: dict[str, dict[str, list[float]]] = {
        c.name: {w: [] for w in WORKLOADS} for c in drivers
    }
    try:
        for workload in WORKLOADS:
            autocommit = workload != "step"  # the step runs as Database.run does: a transaction
            for c in drivers:
                for key in range(1, 21):
                    c.run(conns[c.name][autocommit], workload, key)
            for block in range(BLOCKS):
                for c in drivers if block % 2 == 0 else list(reversed(drivers)):
                    conn = conns[c.name][autocommit]
                    samples = query_ms[c.name][workload]
                    for i in range(per_block):
                        key = (block * per_block + i) % ROWS + 1
                        started = time.perf_counter_ns()
                        c.run(conn, workload, key)
                        samples.append((time.perf_counter_ns() - started) / 1e6)
    finally:
        for pair in conns.values():
            for conn in pair.values():
                conn.close()
    return {
        c.name: {
            "connect": Timing.of(connect_ms[c.name]),
            **{w: Timing.of(query_ms[c.name][w]) for w in WORKLOADS},
        }
        for c in drivers
    }


class TurnCounter:
    """A TCP relay in front of a server that counts the client's turns: a flight of client
    bytes that follows server bytes (or opens the connection). TLS passes through untouched.

    A client that writes again before the server's answer to its previous write arrives is
    counted once; one whose next write crosses an answer it did not wait for would be counted
    twice. Both drivers here write each request whole and then wait, so the count is exact
    (pg8000's three per parameterized statement are its Parse/Sync, Describe/Sync and
    Bind/Execute/Sync, read back in between, in ``CoreConnection.execute_unnamed``)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._turns = 0
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def turns(self) -> int:
        with self._lock:
            return self._turns

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        server = socket.create_connection(self._upstream)
        last = "server"
        with selectors.DefaultSelector() as selector, client, server:
            selector.register(client, selectors.EVENT_READ)
            selector.register(server, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in selector.select(timeout=0.5):
                    source = key.fileobj
                    try:
                        data = source.recv(65536)  # type: ignore[union-attr]
                    except OSError:
                        return
                    if not data:
                        return
                    if source is client:
                        if last == "server":
                            with self._lock:
                                self._turns += 1
                        last = "client"
                        server.sendall(data)
                    else:
                        last = "server"
                        client.sendall(data)


def round_trips(drivers: Sequence[Client], ep: Endpoint) -> dict[str, dict[str, float]]:
    relay = TurnCounter((ep.host, ep.port))
    relayed = Endpoint(ep.host, relay.port, ep.dbname, ep.user, ep.password, ep.ca)
    found: dict[str, dict[str, float]] = {}
    try:
        for c in drivers:
            before = relay.turns
            conns = {mode: c.connect(relayed, autocommit=mode) for mode in (True, False)}
            counts = {"connect": (relay.turns - before) / 2}
            try:
                for workload in WORKLOADS:
                    conn = conns[workload != "step"]
                    for key in range(1, 4):
                        c.run(conn, workload, key)
                    before = relay.turns
                    for i in range(ROUND_TRIP_ITERATIONS):
                        c.run(conn, workload, i % ROWS + 1)
                    counts[workload] = (relay.turns - before) / ROUND_TRIP_ITERATIONS
            finally:
                for conn in conns.values():
                    conn.close()
            found[c.name] = counts
    finally:
        relay.close()
    return found


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class CheckContext:
    direct: Endpoint
    proxy: Endpoint  # one server connection behind it
    admin: psycopg.Connection  # a superuser, autocommit, on PostgreSQL directly
    other_ca: Path  # a CA that vouches for neither server


def _check_statement_timeout(c: Client, ctx: CheckContext) -> str:
    conn = c.connect(ctx.direct, autocommit=False)
    c.execute(conn, "SET LOCAL statement_timeout = 100")
    try:
        c.fetch_one(conn, "SELECT pg_sleep(2)")
        result = "no error"
    except Exception as error:  # noqa: BLE001 - the error is the result
        result = f"raised {c.describe(error)}"
    c.rollback(conn)
    reusable = c.fetch_one(conn, "SELECT 1")[0] == 1
    conn.close()
    return f"{result}; connection reusable after rollback: {reusable}"


def _check_killed_connection(c: Client, ctx: CheckContext) -> str:
    conn = c.connect(ctx.direct, autocommit=True)
    pid = c.fetch_one(conn, "SELECT pg_backend_pid()")[0]
    ctx.admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)
    outcomes = []
    for _ in range(2):
        try:
            c.fetch_one(conn, "SELECT 1")
            outcomes.append("no error")
        except Exception as error:  # noqa: BLE001 - the error is the result
            outcomes.append(c.describe(error))
    flags = ""
    if hasattr(conn, "broken"):
        flags = f"; conn.broken={conn.broken} conn.closed={bool(conn.closed)}"
    with contextlib.suppress(Exception):
        conn.close()
    return f"first call: {outcomes[0]}; second call: {outcomes[1]}{flags}"


def _check_prepared_statements(c: Client, ctx: CheckContext) -> str:
    conn = c.connect(ctx.direct, autocommit=True)
    for key in range(1, 11):
        c.run(conn, "select_row", key)
        c.run(conn, "update_row", key)
    count = c.fetch_one(conn, "SELECT count(*) FROM pg_prepared_statements")[0]
    conn.close()
    return f"{count} in the session after 10 executions of each query"


def _check_verify_full(c: Client, ctx: CheckContext) -> str:
    d = ctx.direct
    other = Endpoint(d.host, d.port, d.dbname, d.user, d.password, str(ctx.other_ca))
    try:
        c.connect(other, autocommit=True).close()
    except Exception as error:  # noqa: BLE001 - the error is the result
        return f"refused: {c.describe(error).split(' (')[0]}: {str(error)[:100]!r}"
    return "ACCEPTED a server the bundle does not vouch for"


def _check_through_proxy(c: Client, ctx: CheckContext) -> str:
    conn = c.connect(ctx.proxy, autocommit=False)
    for key in range(1, 21):
        c.run(conn, "step", key)
    conn.close()
    return "connected (startup packet accepted) and ran 20 saga-step transactions"


def _check_autocommit_pooled(c: Client, ctx: CheckContext) -> str:
    wrong = 0
    errors: list[str] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        nonlocal wrong
        conn = c.connect(ctx.proxy, autocommit=True)
        try:
            for i in range(100):
                try:
                    value = c.fetch_one(conn, f"SELECT %s::int + {k}", (i,))[0]
                except Exception as error:  # noqa: BLE001 - counted, not raised
                    with lock:
                        errors.append(c.describe(error))
                    continue
                if value != i + k:
                    with lock:
                        wrong += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first = f" (first: {errors[0]})" if errors else ""
    return f"{wrong} of 400 results wrong, {len(errors)} errors{first}"


def _check_tcp_nodelay(c: Client, ctx: CheckContext) -> str:
    if isinstance(c, Pg8000Client):
        medians = {}
        for nodelay in (False, True):
            client = Pg8000Client(nodelay=nodelay)
            taken = []
            for _ in range(9):
                started = time.perf_counter()
                conn = client.connect(ctx.direct, autocommit=True)
                taken.append((time.perf_counter() - started) * 1000)
                conn.close()
            medians[nodelay] = statistics.median(taken)
        return (
            f"pg8000 leaves it off: connect {medians[False]:.1f} ms as it comes, "
            f"{medians[True]:.1f} ms on a socket of ours with TCP_NODELAY (used above)"
        )
    conn = c.connect(ctx.direct, autocommit=True)
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    conn.close()
    return f"TCP_NODELAY={int(bool(value))} on the connection's socket (libpq sets it)"


CHECKS: Final[tuple[tuple[str, str, Callable[[Client, CheckContext], str]], ...]] = (
    (
        "statement_timeout",
        "what does a statement cancelled by statement_timeout raise? (database.py maps "
        "psycopg.errors.QueryCanceled to TransientError)",
        _check_statement_timeout,
    ),
    (
        "killed_connection",
        "what does a connection the server terminated raise? (database.py reconnects on "
        "psycopg.OperationalError and checks conn.broken)",
        _check_killed_connection,
    ),
    (
        "prepared_statements",
        "protocol-level prepared statements left in the session? (RDS Proxy pins them, F06)",
        _check_prepared_statements,
    ),
    ("verify_full", "a server certificate from another CA is refused?", _check_verify_full),
    (
        "tcp_nodelay",
        "Nagle's algorithm off on the connection? (on, small writes wait for delayed ACKs)",
        _check_tcp_nodelay,
    ),
    (
        "through_proxy",
        "the local RDS Proxy stand-in (no startup options, transaction pooling) accepts the "
        "driver?",
        _check_through_proxy,
    ),
    (
        "autocommit_pooled",
        "parameterized statements outside a transaction, 4 clients through the proxy sharing "
        "ONE server connection: right results?",
        _check_autocommit_pooled,
    ),
)


def _attempt(action: Callable[[], str], client: Client) -> str:
    try:
        return action()
    except Exception as error:  # noqa: BLE001 - the error is the result being reported
        return f"raised {client.describe(error)}: {str(error)[:140]!r}"


def checks(drivers: Sequence[Client], ctx: CheckContext) -> list[Check]:
    return [
        Check(name, question, {c.name: _attempt(functools.partial(fn, c, ctx), c) for c in drivers})
        for name, question, fn in CHECKS
    ]


# --------------------------------------------------------------------------- together


@contextlib.contextmanager
def _database() -> Iterator[tuple[Endpoint, Endpoint, psycopg.Connection, Path]]:
    """PostgreSQL and the proxy in front of it, a small schema, an application role."""
    with LocalPostgres() as pg, tempfile.TemporaryDirectory(prefix="bench-ca-") as tmp:
        settings = pg.settings
        password = secrets.token_urlsafe(18)
        with psycopg.connect(settings.conninfo(), autocommit=True) as admin:
            for statement in _SCHEMA:
                admin.execute(statement)
            admin.execute(
                sql.SQL("CREATE ROLE bench_app LOGIN PASSWORD {}").format(sql.Literal(password))
            )
            admin.execute("GRANT SELECT, UPDATE ON bench_items TO bench_app")
            admin.execute("GRANT INSERT ON bench_events TO bench_app")
            admin.execute("GRANT USAGE ON SEQUENCE bench_events_id_seq TO bench_app")
            ca = str(pg.ca.ca_file)
            direct = Endpoint(
                settings.host, settings.port, settings.dbname, "bench_app", password, ca
            )
            # One server connection: the autocommit check needs clients to share it.
            with LocalPgBouncer(settings, pg.ca, pool_size=1) as bouncer:
                ps = bouncer.settings
                proxy = Endpoint(ps.host, ps.port, ps.dbname, "bench_app", password, ps.sslrootcert)
                other = LocalCertificateAuthority(Path(tmp), name="some other CA")
                yield direct, proxy, admin, other.ca_file


def measure(
    runs: int = 15,
    iterations: int = 500,
    connects: int = 40,
    *,
    sizes: bool = True,
    cold: bool = True,
    stage: str = "dev",
) -> DriverComparison:
    drivers = clients()
    notes: list[str] = []
    layer: Path | None = None
    if sizes:
        try:
            layer = lambda_image.built_assets(stage)[1]
        except FileNotFoundError as error:
            notes.append(f"no synthesized layer ({error}); the layer estimates are left out")
    size_of: dict[str, InstallSize] = {}
    layer_with: dict[str, LayerWith] = {}
    current: LayerWith | None = None
    if sizes:
        size_of, layer_with, current, size_notes = lambda_sizes(drivers, layer)
        notes += size_notes
    cold_of: dict[str, ColdImport] = {}
    yardstick: Timing | None = None
    yardstick_modules = 0
    installs = {c.name: native_install(c) for c in drivers}
    if cold:
        cold_of, yardstick, yardstick_modules = cold_imports(drivers, installs, runs)
    with _database() as (direct, proxy, admin, other_ca):
        first = first_queries(drivers, installs, direct, runs)
        lat = {
            "postgres": latency(drivers, direct, iterations=iterations, connects=connects),
            "proxy": latency(drivers, proxy, iterations=iterations, connects=connects),
        }
        trips = round_trips(drivers, direct)
        found = checks(drivers, CheckContext(direct, proxy, admin, other_ca))
    return DriverComparison(
        runs=runs,
        iterations=iterations,
        yardstick=yardstick,
        yardstick_modules=yardstick_modules,
        layer=current,
        drivers={
            c.name: DriverResult(
                name=c.name,
                versions=c.versions(),
                size=size_of.get(c.name),
                layer_with=layer_with.get(c.name),
                cold_import=cold_of.get(c.name),
                first_query=first[c.name],
                latency={endpoint: lat[endpoint][c.name] for endpoint in lat},
                round_trips=trips[c.name],
            )
            for c in drivers
        },
        checks=found,
        notes=notes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.driver", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per figure")
    parser.add_argument("--iterations", type=int, default=500, help="per query and driver")
    parser.add_argument("--connects", type=int, default=40, help="connects per driver")
    parser.add_argument("--no-size", action="store_true", help="skip the pip installs for Lambda")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold import runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--json-file", type=Path, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    result = measure(
        runs=args.runs,
        iterations=args.iterations,
        connects=args.connects,
        sizes=not args.no_size,
        cold=not args.no_cold,
    )
    if args.json_file is not None:
        args.json_file.write_text(json.dumps(result.as_json(), indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result.as_json(), indent=1) if args.json else "\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
