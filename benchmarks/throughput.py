"""Local throughput: orders/s and CPU per order of the local stack, per process kind.

``python -m benchmarks.throughput --orders 100`` starts the local stack exactly as ``make
chaos`` does (``devstack.chaos.run``: the same ``LocalStack`` arguments, Tracer off, logs
discarded), with every fault rate at 0, and runs one batch of happy orders through the chaos
client (``devstack.chaos.run_on``: POSTs through the local API, then waits for the stack to
settle and checks the invariants). It prints:

* orders/s over the chaos run's own clock (first POST to the settled stack);
* CPU seconds per order over the whole process tree of the local stack, split per kind: this
  process (the driver: moto's main server with Step Functions, SQS, Lambda's API, the API
  gateway, the SQS poller, the payment provider, the client threads), the DynamoDB moto
  process, each function's worker pool, PostgreSQL and pgbouncer (both detach, so they are
  found by pid, not as children).

CPU is read from ``/proc/<pid>/stat`` (user + system) of every process before and after
``run_on``; environments are warmed up and the customers' tokens made before the first
reading, so start-up and cold starts are not in it (as they are not in the chaos clock). The
reading window is ``run_on`` itself: the clock plus planning and reading the report (both
small; ``window_s`` says how long). ``--py-spy FILE`` records a profile of the same window
(``py-spy record --subprocesses``; it takes CPU of its own, so the numbers of such a run are
not comparable) and prints the hottest frames.

``measure(orders)`` returns a ``Throughput`` whose ``as_json()`` another script can embed
(``docs/performance.md``). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from devstack import chaos
from devstack.chaos import ChaosSettings
from devstack.lambda_runtime import discard_logs
from devstack.stack import LocalStack

DRIVER: Final = "driver"
MOTO: Final = "moto (dynamodb)"
POSTGRES: Final = "postgres"
PGBOUNCER: Final = "pgbouncer"
REAPED: Final = "exited children"
OTHER: Final = "other"
PROFILER: Final = "py-spy"
FUNCTION_PREFIX: Final = "fn "
KINDS_HELP: Final = {
    DRIVER: "this process: moto's main server (Step Functions interpreter, SQS, Lambda API,"
    " Cognito), API gateway, SQS poller, payment provider, chaos client threads",
    MOTO: "the second moto server (DynamoDB: the idempotency store)",
    POSTGRES: "the postmaster and its backends",
    PGBOUNCER: "the RDS Proxy stand-in",
    REAPED: "children of this process that exited during the run (whole lifetime)",
    OTHER: "any other descendant of this process",
    FUNCTION_PREFIX + "<handler>": "the function's worker processes (one per environment)",
}

# Every fault off: a batch of happy orders (no hot SKUs, declines, drops or crashes).
HAPPY: Final = dict(
    duplicate_rate=0.0,
    poison_rate=0.0,
    payment_5xx_rate=0.0,
    payment_timeout_rate=0.0,
    lost_response_rate=0.0,
    crash_after_side_effect_rate=0.0,
    db_drop_rate=0.0,
    declined_rate=0.0,
    hot_skus=0,
    key_reuse_rate=0.0,
    start_throttle_rate=0.0,
    undeliverable_rate=0.0,
)


@dataclass(frozen=True)
class Throughput:
    """One measured batch. CPU figures are seconds over the ``run_on`` window."""

    orders: int  # planned
    submitted: int  # accepted by the API (202)
    confirmed: int
    wall_s: float  # the chaos clock: first POST until the stack settled
    window_s: float  # the CPU window (run_on): the clock plus planning and the report
    cpu_s: Mapping[str, float]  # process kind -> CPU seconds in the window
    invocations: Mapping[str, int]  # "fn <handler>" -> invocations in the window
    startup_s: float  # LocalStack start plus warm-up (not in any figure above)
    pool_size: int
    concurrency: int
    ok: bool  # every invariant held and the stack settled
    settings: Mapping[str, Any] = field(default_factory=dict)
    profile: str = ""  # the hottest frames, when the run was profiled (not in as_json)

    @property
    def orders_per_s(self) -> float:
        return self.submitted / self.wall_s if self.wall_s else 0.0

    @property
    def total_cpu_s(self) -> float:
        """The local stack's CPU (a profiler's own is listed, not counted)."""
        return sum(v for k, v in self.cpu_s.items() if k != PROFILER)

    @property
    def cpu_per_order(self) -> dict[str, float]:
        n = max(1, self.submitted)
        return {kind: seconds / n for kind, seconds in self.cpu_s.items()}

    @property
    def busy_cores(self) -> float:
        """Average cores busy in the window (the machine has two)."""
        return self.total_cpu_s / self.window_s if self.window_s else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "submitted": self.submitted,
            "confirmed": self.confirmed,
            "ok": self.ok,
            "wall_s": round(self.wall_s, 2),
            "orders_per_s": round(self.orders_per_s, 2),
            "window_s": round(self.window_s, 2),
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "cpu_s_total": round(self.total_cpu_s, 2),
            "cpu_s_per_order": {k: round(v, 4) for k, v in self.cpu_per_order.items()},
            "cpu_s_per_order_total": round(self.total_cpu_s / max(1, self.submitted), 4),
            "busy_cores": round(self.busy_cores, 2),
            "invocations": dict(self.invocations),
            "startup_s": round(self.startup_s, 1),
            "pool_size": self.pool_size,
            "concurrency": self.concurrency,
            "cpu_count": os.cpu_count(),
            "kinds": KINDS_HELP,
        }

    def render(self) -> str:
        n = max(1, self.submitted)
        out = [
            f"{self.submitted}/{self.orders} orders accepted, {self.confirmed} confirmed,"
            f" invariants {'hold' if self.ok else 'BROKEN'}",
            f"wall {self.wall_s:.1f} s (chaos clock) -> {self.orders_per_s:.2f} orders/s;"
            f" CPU window {self.window_s:.1f} s, {self.busy_cores:.2f} cores busy on average",
            f"start-up and warm-up (not measured): {self.startup_s:.1f} s",
            f"{'process kind':<28} {'CPU s':>8} {'CPU s/order':>12} {'invocations':>12}",
        ]
        for kind, seconds in sorted(self.cpu_s.items(), key=lambda kv: -kv[1]):
            calls = self.invocations.get(kind)
            out.append(
                f"{kind:<28} {seconds:8.2f} {seconds / n:12.4f}"
                f" {'' if calls is None else calls:>12}"
            )
        out.append(f"{'total':<28} {self.total_cpu_s:8.2f} {self.total_cpu_s / n:12.4f}")
        return "\n".join(out)


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class _Proc:
    ppid: int
    own_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: children it waited for
    cmdline: str


def _read_procs() -> dict[int, _Proc]:
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, _Proc] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        # Fields after "(comm) ": state ppid ... utime(14) stime cutime cstime (proc(5)).
        fields = stat[stat.rfind(b")") + 2 :].split()
        out[int(entry.name)] = _Proc(
            ppid=int(fields[1]),
            own_s=(int(fields[11]) + int(fields[12])) / ticks,
            reaped_s=(int(fields[13]) + int(fields[14])) / ticks,
            cmdline=cmdline,
        )
    return out


def _descendants(procs: Mapping[int, _Proc], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.ppid, []).append(pid)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


class StackProcesses:
    """Finds the local stack's processes and classifies them by kind."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.driver = os.getpid()
        self.postmaster = _postmaster_pid(stack)
        self.pgbouncer = stack.proxy.pid if stack.proxy is not None else None

    def _function_pids(self) -> dict[int, str]:
        pids: dict[int, str] = {}
        for pool in self.stack.pools.values():
            name = FUNCTION_PREFIX + _handler_module(pool.config.handler)
            for worker in pool.workers:
                if (pid := worker.pid) is not None:
                    pids[pid] = name
        return pids

    def sample(self) -> dict[tuple[str, int], float]:
        """(kind, pid) -> CPU seconds so far; the driver's reaped children under pid 0."""
        procs = _read_procs()
        functions = self._function_pids()
        out: dict[tuple[str, int], float] = {}
        if (me := procs.get(self.driver)) is not None:
            out[DRIVER, self.driver] = me.own_s
            out[REAPED, 0] = me.reaped_s
        for pid in _descendants(procs, self.driver):
            proc = procs[pid]
            if pid in functions:
                kind = functions[pid]
            elif "devstack.moto_process" in proc.cmdline:
                kind = MOTO
            elif "py-spy" in proc.cmdline:
                kind = PROFILER
            elif "devstack.lambda_runtime" in proc.cmdline:
                kind = FUNCTION_PREFIX + "(unknown)"
            else:
                kind = OTHER
            out[kind, pid] = proc.own_s + proc.reaped_s
        for root, kind in ((self.postmaster, POSTGRES), (self.pgbouncer, PGBOUNCER)):
            if root is None or root not in procs:
                continue
            for pid in (root, *_descendants(procs, root)):
                out[kind, pid] = procs[pid].own_s + procs[pid].reaped_s
        return out

    def invocations(self) -> Counter[str]:
        calls: Counter[str] = Counter()
        for pool in self.stack.pools.values():
            name = FUNCTION_PREFIX + _handler_module(pool.config.handler)
            calls[name] += sum(w.invocations for w in pool.workers)
        return calls


def cpu_by_kind(
    before: Mapping[tuple[str, int], float], after: Mapping[tuple[str, int], float]
) -> dict[str, float]:
    """CPU seconds per kind between two samples (a process born meanwhile counts whole)."""
    out: dict[str, float] = {}
    for (kind, pid), seconds in after.items():
        out[kind] = out.get(kind, 0.0) + max(0.0, seconds - before.get((kind, pid), 0.0))
    return out


def _handler_module(handler: str) -> str:
    """``orders_saga.handlers.take_payment.handler`` -> ``take_payment``."""
    return handler.rsplit(".", 2)[-2]


def _postmaster_pid(stack: LocalStack) -> int | None:
    with stack.db() as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    if row is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((Path(str(row[0])) / "postmaster.pid").read_text().split()[0])
    return None


# --------------------------------------------------------------------------- the run


def happy_settings(orders: int, **overrides: Any) -> ChaosSettings:
    """The chaos run's defaults (pool size, concurrency, tracing off) with every fault off."""
    return replace(ChaosSettings(orders=orders), **{**HAPPY, **overrides})


def local_stack(settings: ChaosSettings, *, quiet: bool = True) -> LocalStack:
    """The stack ``devstack.chaos.run`` builds for ``settings`` (same arguments)."""

    def say(message: str) -> None:
        if not quiet:
            print(f"throughput: {message}", file=sys.stderr, flush=True)

    return LocalStack(
        cdk_out=settings.cdk_out,
        pool_size=settings.pool_size,
        catalogue=chaos.catalogue(settings),
        say=say,
        log_sink=discard_logs,
        provider=chaos.HookedProvider(),
        tracing=settings.tracing,
        ablations=settings.ablations,
    )


def measure(
    orders: int,
    *,
    settings: ChaosSettings | None = None,
    quiet: bool = True,
    py_spy: Path | None = None,
) -> Throughput:
    """Start the local stack, run ``orders`` happy orders, measure, stop the stack."""
    settings = settings or happy_settings(orders)
    if settings.orders != orders:
        settings = replace(settings, orders=orders)
    started = time.monotonic()
    with local_stack(settings, quiet=quiet) as stack:
        # What run_on does before its clock starts, done before the CPU window opens.
        chaos.warm_up(stack)
        for i in range(chaos.CUSTOMERS):
            stack.customer_token(f"chaos-{i}@example.com")
        chaos.worst_case_attempts()  # imports infra.config once (the report needs it)
        startup_s = time.monotonic() - started
        processes = StackProcesses(stack)
        calls_before = processes.invocations()
        with _profiled(py_spy):
            before = processes.sample()
            window_started = time.monotonic()
            report = chaos.run_on(stack, settings, progress_stream=None if quiet else sys.stderr)
            window_s = time.monotonic() - window_started
            after = processes.sample()
        calls = processes.invocations() - calls_before
    profile = ""
    if py_spy is not None and py_spy.exists():
        profile = profile_summary(py_spy, {pid: kind for kind, pid in after})
    return Throughput(
        orders=orders,
        submitted=report.counts.get("submitted", 0),
        confirmed=report.counts.get("confirmed", 0),
        wall_s=report.wall_s,
        window_s=window_s,
        cpu_s=cpu_by_kind(before, after),
        invocations=dict(calls),
        startup_s=startup_s,
        pool_size=settings.pool_size,
        concurrency=settings.concurrency,
        ok=report.ok,
        settings={"seed": settings.seed, "tracing": settings.tracing},
        profile=profile,
    )


# --------------------------------------------------------------------------- profiling


@contextlib.contextmanager
def _profiled(out: Path | None, rate: int = 49) -> Iterator[None]:
    """``py-spy record`` of this process and its children while the block runs."""
    if out is None:
        yield
        return
    py_spy = Path(sys.executable).with_name("py-spy")
    log = out.with_name(out.name + ".log")
    command = [
        str(py_spy),
        "record",
        "--pid",
        str(os.getpid()),
        "--subprocesses",
        "--nonblocking",
        # Only threads holding the GIL: Python's CPU. (Idle detection misses threads blocked
        # in recv/select here, so without it the waits fill the profile.)
        "--gil",
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    with log.open("wb") as errors:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        time.sleep(1.0)  # attached before the window opens
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)  # py-spy writes the file on Ctrl-C
            proc.wait(timeout=120)
    if not out.exists():
        print(f"throughput: py-spy wrote no profile; see {log}", file=sys.stderr)


def profile_summary(raw: Path, kinds: Mapping[int, str], top: int = 12) -> str:
    """The hottest frames of a ``py-spy --format raw`` file per process kind (``kinds``: pid
    -> kind), by samples where the frame is the innermost (self) and anywhere (total)."""
    own: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    per_kind: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        pid = int(processes[-1].split()[1].split(":")[0]) if processes else 0
        kind = kinds.get(pid, OTHER)
        code = [_short(f) for f in frames if not f.startswith(("process ", "thread "))]
        per_kind[kind] += count
        if code:
            own[kind, code[-1]] += count
        for frame in set(code):
            total[kind, frame] += count
    samples = sum(per_kind.values())
    if not samples:
        return "(no samples)"
    out = [f"{samples} samples (active threads)"]
    for kind, n in per_kind.most_common():
        out.append(f"{kind}: {100 * n / samples:.1f}% of the samples")
        out.append(f"  {'self %':>6} {'total %':>7}  frame")
        hottest = [(frame, c) for (k, frame), c in own.most_common() if k == kind][:top]
        for frame, c in hottest:
            out.append(
                f"  {100 * c / samples:6.1f} {100 * total[kind, frame] / samples:7.1f}  {frame}"
            )
    return "\n".join(out)


def _short(frame: str) -> str:
    """``handler (/long/path/site-packages/pkg/mod.py:12)`` -> ``handler (pkg/mod.py:12)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3.13/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--pool-size", type=int, default=ChaosSettings().pool_size)
    parser.add_argument("--concurrency", type=int, default=ChaosSettings().concurrency)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument("--py-spy", type=Path, help="record a raw py-spy profile here")
    parser.add_argument("--verbose", action="store_true", help="stack messages and progress")
    args = parser.parse_args(argv)
    settings = happy_settings(
        args.orders, pool_size=args.pool_size, concurrency=args.concurrency, seed=args.seed
    )
    result = measure(args.orders, settings=settings, quiet=not args.verbose, py_spy=args.py_spy)
    print(result.render(), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    if result.profile:
        print(result.profile, flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
