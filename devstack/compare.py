"""``make compare``: every containment switched off in turn, against the hardened stack.

For each ablation (``devstack/ablations.py``) two chaos runs on one local stack, with the same
seed and the faults that row is about: the hardened app, then the app without that one
containment. The table says which invariant broke and how often (e.g. double-charged 14 vs
0). Then the pairs of layers that cover each other, and the reasonable-but-wrong app: every
containment off at once, every fault of every row, against the hardened one.

Runs share one stack (one PostgreSQL, moto, worker pools): ``LocalStack.reset_for_run``
empties it between runs and ``apply_ablations`` switches containments, restarting only the
workers a patch touches. ``--write`` puts the table and a chart into ``docs/ablations.md``
(``docs/ablations.png``) and the numbers into ``docs/ablations.json``, which the README's
failure matrix shows in its "without it" column (``infra/failure_matrix.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO

from devstack import ablations as abl
from devstack.chaos import ChaosReport, ChaosSettings, HookedProvider, catalogue, run_on
from devstack.lambda_runtime import discard_logs
from devstack.stack import LocalStack
from infra import failure_matrix

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_FILE: Final = failure_matrix.ABLATIONS_FILE
REPORT_FILE: Final = REPO_ROOT / "docs" / "ablations.md"
CHART_FILE: Final = REPO_ROOT / "docs" / "ablations.png"
EVERYTHING_ROW: Final = "reasonable-but-wrong"
# Measured beside the invariants: what the circuit breaker changes (F19) is load.
MEASURED: Final = ("payment provider requests",)


@dataclass(frozen=True)
class Row:
    """One line of the table: a profile run hardened and with ``keys`` switched off."""

    name: str
    keys: tuple[str, ...]
    protects: str  # the invariant that must break ("" for an argued row)
    faults: Mapping[str, Any]
    argued: str = ""
    max_orders: int | None = None


@dataclass
class Outcome:
    name: str
    keys: list[str]
    protects: str
    argued: str
    hardened: dict[str, int]  # invariant -> violations in the hardened run
    ablated: dict[str, int]
    measured: dict[str, list[int]] = field(default_factory=dict)  # name -> [hardened, ablated]
    injected: dict[str, int] = field(default_factory=dict)  # faults of the ablated run
    seconds: list[float] = field(default_factory=list)  # wall time [hardened, ablated]
    settled: list[bool] = field(default_factory=list)

    @property
    def broken(self) -> dict[str, int]:
        """Invariants the ablated run broke, by count, largest first."""
        return dict(sorted(((k, v) for k, v in self.ablated.items() if v), key=lambda kv: -kv[1]))

    @property
    def proven(self) -> bool:
        """The protected invariant broke without the containment and held with it."""
        return bool(
            self.protects
            and self.ablated.get(self.protects, 0) > 0
            and not any(self.hardened.values())
        )


def rows(only: Iterable[str] = ()) -> list[Row]:
    """Every ablation, every pair, then everything off (or just the ``only`` keys)."""
    wanted = set(only)
    out = [
        Row(a.key, (a.key,), a.protects, a.faults, a.argued, a.max_orders)
        for a in abl.ABLATIONS
        if not wanted or a.key in wanted
    ]
    if not wanted:
        out += [
            Row("+".join(keys), keys, protects, abl.union_of_faults(keys))
            for keys, protects in abl.PAIRS
        ]
        out.append(Row(EVERYTHING_ROW, abl.EVERYTHING, "", abl.everything_faults()))
    return out


def compare(
    stack: LocalStack,
    selected: Sequence[Row],
    base: ChaosSettings,
    *,
    say: TextIO | None = None,
) -> list[Outcome]:
    """Run every row hardened and ablated on ``stack`` (same seed, same faults)."""
    outcomes = []
    for row in selected:
        reports: list[ChaosReport] = []
        # Keys, so order ids, never repeat on a stack: a repeated key would be answered from
        # the API's idempotency record of an order the reset removed.
        run = uuid.uuid4().hex[:6]
        for label, keys in (("h", frozenset[str]()), ("a", frozenset(row.keys))):
            settings = replace(
                base,
                orders=min(base.orders, row.max_orders or base.orders),
                run_label=f"{label}{run}-",
                ablations=keys,
                **dict(row.faults),
            )
            stack.reset_for_run(catalogue(settings))
            stack.apply_ablations(keys)
            reports.append(run_on(stack, settings))
        hardened, ablated = reports
        outcome = Outcome(
            name=row.name,
            keys=list(row.keys),
            protects=row.protects,
            argued=row.argued,
            hardened=dict(hardened.violations),
            ablated=dict(ablated.violations),
            measured={m: [hardened.counts.get(m, 0), ablated.counts.get(m, 0)] for m in MEASURED},
            injected={k: v for k, v in ablated.injected.items() if v},
            seconds=[round(hardened.wall_s, 1), round(ablated.wall_s, 1)],
            settled=[hardened.settled, ablated.settled],
        )
        outcomes.append(outcome)
        if say is not None:
            print(_line(outcome), file=say, flush=True)
    stack.apply_ablations(frozenset())
    return outcomes


def _line(o: Outcome) -> str:
    if o.protects:
        head = f"{o.protects}: {o.ablated.get(o.protects, 0)} vs {o.hardened.get(o.protects, 0)}"
    else:
        head = "argued" if o.argued else "all invariants"
    others = ", ".join(f"{k} {v}" for k, v in o.broken.items() if k != o.protects)
    return f"{o.name:<52} {head}{'; also ' + others if others else ''}"


def render_table(outcomes: Sequence[Outcome]) -> str:
    """Markdown: one row per ablation, violations without it vs with it."""
    out = [
        "| switched off | invariant it protects | without it | hardened | other invariants "
        "broken without it | provider requests (hardened → without) |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        hardened_total = sum(o.hardened.values())
        if o.protects:
            protected = f"`{o.protects}`"
            without = str(o.ablated.get(o.protects, 0))
            hardened = str(o.hardened.get(o.protects, 0))
        else:
            protected = "argued: " + o.argued if o.argued else "all of them"
            without = str(sum(o.ablated.values()))
            hardened = str(hardened_total)
        others = ", ".join(f"{k} {v}" for k, v in o.broken.items() if k != o.protects) or "none"
        requests = " → ".join(str(n) for n in o.measured.get("payment provider requests", []))
        out.append(f"| `{o.name}` | {protected} | {without} | {hardened} | {others} | {requests} |")
    return "\n".join(out)


def write_chart(outcomes: Sequence[Outcome], path: Path) -> None:
    """Bars per row: violations of every invariant, hardened against switched off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o.name.replace("+", "+\n") for o in outcomes]
    without = [sum(o.ablated.values()) for o in outcomes]
    hardened = [sum(o.hardened.values()) for o in outcomes]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(outcomes) + 1.5))
    y = range(len(outcomes))
    ax.barh([i + 0.2 for i in y], without, height=0.4, label="containment switched off")
    ax.barh([i - 0.2 for i in y], hardened, height=0.4, label="hardened")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("invariant violations in the run (all invariants)")
    ax.set_title("What each containment is worth: the same faults, with and without it")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(outcomes: Sequence[Outcome], base: ChaosSettings, seconds: float) -> None:
    data = {
        "settings": {"orders": base.orders, "seed": base.seed, "pool_size": base.pool_size},
        "seconds": round(seconds, 1),
        "rows": [asdict(o) for o in outcomes],
    }
    RESULTS_FILE.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    write_chart(outcomes, CHART_FILE)
    REPORT_FILE.write_text(render_report(outcomes, base, seconds), encoding="utf-8")


def render_report(outcomes: Sequence[Outcome], base: ChaosSettings, seconds: float) -> str:
    capped = ", ".join(f"{a.key} {a.max_orders}" for a in abl.ABLATIONS if a.max_orders is not None)
    return f"""# What each containment is worth (`make compare`)

Generated by `make compare` ({base.orders} orders per run, {capped}; seed {base.seed}, \
{base.pool_size} environments per function, {seconds / 60:.1f} minutes on this machine's
2 cores); do not edit by hand. Each row runs the local stack twice on the same seed with the
faults that row is about (`devstack/ablations.py`): once hardened, once with the containment
switched off. The first rows switch one containment off each; then the pair of layers that
cover each other; then the reasonable-but-wrong app with every containment off and every
fault on. `tests/e2e/test_ablations.py` runs the same rows at a smaller N in CI and fails when
an ablation stops breaking its invariant or the hardened run breaks any.

{render_table(outcomes)}

![violations per run, hardened and switched off](ablations.png)

Rows marked *argued* break no invariant under any fault the harness injects; ADR 0009
(`docs/decisions/0009-load-bearing-containments.md`) says why each is redundant or kept.
"""


README_START: Final = "<!-- ablations:start -->"
README_END: Final = "<!-- ablations:end -->"


def load_outcomes(path: Path = RESULTS_FILE) -> list[Outcome]:
    """The outcomes ``--write`` stored (``docs/ablations.json``)."""
    return [Outcome(**row) for row in failure_matrix.load_ablations(path).get("rows", [])]


def with_readme_table(readme: str, outcomes: Sequence[Outcome]) -> str:
    """The README with the table between its ablations markers replaced."""
    start, end = readme.index(README_START), readme.index(README_END)
    return f"{readme[: start + len(README_START)]}\n{render_table(outcomes)}\n{readme[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack compare", description=__doc__)
    parser.add_argument("--orders", type=int, default=40, help="orders per run (%(default)s)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], metavar="KEY")
    parser.add_argument("--write", action="store_true", help="write docs/ablations.*")
    args = parser.parse_args(argv)
    abl.parse(args.only)  # unknown keys fail before the stack starts
    base = ChaosSettings(
        orders=args.orders,
        seed=args.seed,
        pool_size=args.pool_size,
        settle_timeout_s=30,
        cdk_out=REPO_ROOT / "cdk.out",
    )
    selected = rows(args.only)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"compare: {message}", file=sys.stderr, flush=True)

    with LocalStack(
        cdk_out=base.cdk_out,
        pool_size=base.pool_size,
        catalogue=catalogue(base),
        say=say,
        log_sink=discard_logs,
        provider=HookedProvider(),
        tracing=False,
    ) as stack:
        outcomes = compare(stack, selected, base, say=sys.stderr)
    seconds = time.monotonic() - started
    print(render_table(outcomes))
    print(f"\n{len(outcomes)} rows, {2 * len(outcomes)} runs in {seconds:.0f} s")
    if args.write:
        write_results(outcomes, base, seconds)
        readme = failure_matrix.README_FILE
        readme.write_text(
            with_readme_table(readme.read_text(encoding="utf-8"), outcomes), encoding="utf-8"
        )
        failure_matrix.main(["--write"])  # the README matrix's "without it" column
        print(
            f"wrote {REPORT_FILE.name}, {CHART_FILE.name}, {RESULTS_FILE.name} in docs/"
            " and the README's failure matrix"
        )
    failed = [o.name for o in outcomes if o.protects and not o.proven]
    if failed:
        print(f"NOT PROVEN (no violation without it, or one with it): {', '.join(failed)}")
    return 1 if failed else 0


__all__ = ["Outcome", "Row", "compare", "main", "render_table", "rows"]
