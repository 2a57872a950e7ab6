"""docs/performance.{json,md,png} and the README summary, from ``make bench``'s results.

The JSON is the source: the markdown, the chart and the README block are rendered from it, so
``tests/benchmarks/test_performance_report.py`` can check they show the stored numbers.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from benchmarks import cost
from infra.config import SAGA_STEPS

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_FILE: Final = REPO_ROOT / "docs" / "performance.json"
REPORT_FILE: Final = REPO_ROOT / "docs" / "performance.md"
CHART_FILE: Final = REPO_ROOT / "docs" / "performance.png"
README_FILE: Final = REPO_ROOT / "README.md"
README_START: Final = "<!-- performance:start -->"
README_END: Final = "<!-- performance:end -->"
WRITTEN: Final = (RESULTS_FILE, REPORT_FILE, CHART_FILE)
# The order-profile keys the calls benchmark measures; every other key is an assumption
# benchmarks/cost.py documents.
MEASURED_PROFILE_KEYS: Final = ("invocations", "aws_calls", "state_transitions")


def load(path: Path = RESULTS_FILE) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def lines_of(result: Any) -> list[str]:
    """A benchmark's printable lines, whichever way it offers them."""
    if hasattr(result, "lines"):
        lines: list[str] = result.lines()
        return lines
    return str(result.render()).splitlines()


def profile_with_calls(profile: Mapping[str, Any], calls: Mapping[str, Any]) -> dict[str, Any]:
    """The order profile with the measured invocations, AWS calls and transitions."""
    updated = {kind: dict(path) for kind, path in profile.items()}
    for kind, measured in calls["kinds"].items():
        path = updated[kind]
        path["invocations"] = dict(measured["invocations"])
        path["aws_calls"] = dict(measured["calls_by_action"])
        path["state_transitions"] = measured["transitions"]
        # A function the order no longer invokes has no billed duration to assume.
        path["billed_ms"] = {
            fn: ms for fn, ms in path["billed_ms"].items() if fn in path["invocations"]
        }
    return updated


@dataclass(frozen=True)
class CostReport:
    reports: dict[str, cost.Report]
    markdown: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for stage, r in self.reports.items():
            out[stage] = {
                "per_million_standard_usd": round(cost.total(r.standard), 2),
                "per_million_express_usd": round(cost.total(r.express), 2),
                "transitions_per_million_usd": round(
                    sum(line.usd for line in r.standard if "transition" in line.name.lower()), 2
                ),
                "fixed_monthly_usd": round(cost.total(r.fixed), 2),
                "monthly_budget_usd": cost.round_up(r.budget.raw_usd),
                "compensated_share": r.compensated_share,
                "markdown": self.markdown[stage],
            }
        return out

    def lines(self) -> list[str]:
        return [line for r in self.reports.values() for line in cost.render_text(r).splitlines()]


def cost_report(profile_json: Mapping[str, Any]) -> CostReport:
    profile = cost.parse_profile(profile_json)
    reports = {stage: cost.build_report(stage, profile=profile) for stage in ("dev", "prod")}
    markdown = {stage: cost.render_markdown(stage, profile=profile) for stage in ("dev", "prod")}
    return CostReport(reports, markdown)


def goals(results: Mapping[str, Any]) -> list[str]:
    """Each goal of issue 12 with its measured value."""
    out: list[str] = []
    init = results.get("cold_init")
    if init:
        goal = init["goal_ratio"]
        for f in init["functions"]:
            verdict = "met" if f["ratio"] <= goal else "MISSED"
            out.append(
                f"cold init {f['function']}: {f['ratio']:.2f} x B (goal <= {goal}) {verdict}"
            )
    calls = results.get("calls")
    if calls:
        happy = calls["kinds"]["happy"]
        out.append(
            f"AWS calls per happy order: {happy['total_calls']:g} (goal <= {calls['goal_calls']}) "
            f"{'met' if happy['total_calls'] <= calls['goal_calls'] else 'MISSED'}"
        )
        out.append(
            f"state transitions per happy order: {happy['transitions']:g} "
            f"(goal {calls['goal_transitions']}) "
            f"{'met' if happy['transitions'] <= calls['goal_transitions'] else 'MISSED'}"
        )
    prod = results.get("cost", {}).get("prod")
    if prod:
        out.append(
            f"cost per 1M orders (prod): Standard ${prod['per_million_standard_usd']:,.2f}, "
            f"Express ${prod['per_million_express_usd']:,.2f}; fixed "
            f"${prod['fixed_monthly_usd']:,.2f}/month; budget ${prod['monthly_budget_usd']:,}"
        )
    tp = results.get("throughput")
    if tp:
        out.append(
            f"local throughput: {tp['orders_per_s']:.2f} orders/s, "
            f"{tp['cpu_s_per_order_total']:.3f} CPU s per order ({tp['submitted']} orders)"
        )
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def render_readme_block(results: Mapping[str, Any]) -> str:
    """The README's short summary (between the performance markers)."""
    rows = ["| figure | measured | goal |", "|---|---|---|"]
    init = results.get("cold_init")
    if init:
        ratios = [f["ratio"] for f in init["functions"]]
        met = sum(1 for r in ratios if r <= init["goal_ratio"])
        worst = max(init["functions"], key=lambda f: f["ratio"])
        rows.append(
            f"| cold init vs `boto3.client('sqs')` | {min(ratios):.2f}-{max(ratios):.2f} x "
            f"({met} of {len(ratios)} functions within the goal; worst {worst['function']}) "
            f"| <= {init['goal_ratio']} x |"
        )
    calls = results.get("calls")
    if calls:
        happy, comp = calls["kinds"]["happy"], calls["kinds"]["compensated"]
        rows.append(
            f"| AWS calls per order | {happy['total_calls']:g} happy, "
            f"{comp['total_calls']:g} compensated | <= {calls['goal_calls']} |"
        )
        rows.append(
            f"| state transitions per order | {happy['transitions']:g} happy, "
            f"{comp['transitions']:g} compensated | {calls['goal_transitions']} |"
        )
    assets = results.get("assets")
    if assets:
        rows.append(
            f"| Lambda assets (code + layer) | {_mb(assets['code']['zipped_bytes'])} + "
            f"{_mb(assets['layer']['zipped_bytes'])} zipped, "
            f"{_mb(assets['unzipped_total_bytes'])} unzipped | |"
        )
    for stage in ("prod", "dev"):
        c = results.get("cost", {}).get(stage)
        if c:
            rows.append(
                f"| cost per 1M orders, {stage} | ${c['per_million_standard_usd']:,.2f} "
                f"(Express would be ${c['per_million_express_usd']:,.2f}) + "
                f"${c['fixed_monthly_usd']:,.2f}/month fixed | budget "
                f"${c['monthly_budget_usd']:,}/month |"
            )
    tp = results.get("throughput")
    if tp:
        rows.append(
            f"| local stack throughput | {tp['orders_per_s']:.2f} orders/s, "
            f"{tp['cpu_s_per_order_total']:.3f} CPU s/order | |"
        )
    when = results.get("measured_at", "")
    return (
        f"Measured by `make bench` on {when} ({results.get('machine', '')}); "
        "details, charts and the cost lines in [docs/performance.md](docs/performance.md).\n\n"
        + "\n".join(rows)
    )


# Issue 12's measurement before the changes (same method, 15 runs; the issue gives the saga
# steps as one range): the "before" column.
BEFORE_ISSUE_12: Final = {
    "Api": "2.03",
    "Intake": "1.90",
    **{step: "1.92-2.09 (all steps)" for step in SAGA_STEPS},
    "PreTrafficHook": "1.55",
}

WHAT_IT_WOULD_TAKE: Final = """\
What is left above the goal, and what it would take (each cause is in the table's packages):

- **Api and Intake** load Powertools idempotency, whose DynamoDB layer imports boto3 (and with
  it s3transfer) and builds its client at init, plus the REST event handler (Api) or the batch
  processor (Intake), psycopg and pydantic: the work of their first request. Reaching 1.3 x
  would mean dropping Powertools idempotency or its event handler for hand-written ones, which
  the project rules out. Prod keeps 2 provisioned environments behind the Api alias (F04), so
  its init runs before traffic; Lambda SnapStart for Python would restore a snapshot taken
  after init instead (not combinable with provisioned concurrency; a decision for a later ADR).
- **Database steps** (ReserveInventory, ConfirmOrder, ReleaseInventory, MarkOrderFailed) are
  psycopg (ADR 0011 keeps it: pg8000 would save 56-92 ms here but triple the round trips per
  statement; psycopg also brings asyncio, the `asyncio` row), pydantic (the step's input
  model), botocore's signer for the IAM token, and Powertools Logger/Metrics/Tracer. They sit
  just above the goal (about 10 ms on this machine). A step without Tracer would drop the X-Ray
  SDK (about 10 ms) and reach it; the project keeps Tracer in every function (F13: the order
  id is a trace annotation). Pinning wrapt below 2 (it imports asyncio too) was tried: the
  pre-traffic hook went from 1.19 to 1.11 x, the steps did not move (psycopg imports asyncio
  anyway), so the lock was left as it is.
- **Payment steps** add the payment key from Secrets Manager through Powertools Parameters,
  which imports boto3 and all its providers, and urllib3 for the provider: about 0.2 x more
  than a database step.
"""


def _cold_init_table(init: Mapping[str, Any]) -> str:
    rows = [
        "| function | import ms (median) | min-max | B ms | x B | before issue 12 | modules (B) "
        "| top packages, self ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in init["functions"]:
        top = ", ".join(f"{k} {v:.0f}" for k, v in list(f["top_packages_ms"].items())[:5])
        rows.append(
            f"| {f['function']} | {f['median_ms']:.0f} | {f['min_ms']:.0f}-{f['max_ms']:.0f} | "
            f"{f['yardstick_median_ms']:.0f} | **{f['ratio']:.2f}** | "
            f"{BEFORE_ISSUE_12.get(f['function'], '')} | {f['modules']} "
            f"({f['yardstick_modules']}) | {top} |"
        )
    return "\n".join(rows)


def _calls_table(calls: Mapping[str, Any]) -> str:
    rows = ["| order | AWS calls | by function and action | transitions | invocations |"]
    rows.append("|---|---|---|---|---|")
    for kind, k in calls["kinds"].items():
        detail = "<br>".join(f"{n:g} {call}" for call, n in k["calls"].items())
        invoked = ", ".join(f"{fn} {n:g}" for fn, n in k["invocations"].items())
        rows.append(
            f"| {kind} | {k['total_calls']:g} | {detail} | {k['transitions']:g} | {invoked} |"
        )
    return "\n".join(rows)


def _code_block(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```"


def render_report(results: Mapping[str, Any]) -> str:
    parts = [
        "# Performance, calls and cost (`make bench`)",
        "",
        f"Generated by `make bench` on {results.get('measured_at', '')} "
        f"({results.get('machine', '')}, {results.get('seconds', 0) / 60:.0f} minutes); do not "
        "edit by hand. Benchmarks print numbers; no test times anything (a shared 2-core machine "
        "would flake). Goals are issue 12's.",
        "",
        "![cold init per function against the yardstick](performance.png)",
        "",
        "## Goals",
        "",
        *[f"- {line}" for line in goals(results)],
    ]
    init = results.get("cold_init")
    if init:
        parts += [
            "",
            "## Cold init per function",
            "",
            f"Each handler imported in a fresh `python3.13 -I -S` from the built assets (code "
            f"asset, the layer recipe built for this machine, the runtime's boto3) with its "
            f"template environment; B = the same interpreter running `{init['yardstick']}`. "
            f"{init['runs']} alternating runs each; the time is the import itself (interpreter "
            "start-up, the same for both, left out). Top packages: `-X importtime` self time "
            "summed per top-level package, one run.",
            "",
            _cold_init_table(init),
            "",
            WHAT_IT_WOULD_TAKE.rstrip(),
        ]
    calls = results.get("calls")
    if calls:
        parts += [
            "",
            "## AWS calls, state transitions and invocations per order",
            "",
            "From the call recorder (every API call each function makes, as IAM sees it) and the "
            "executions' histories on the local stack, orders sent one at a time after a "
            "warm-up. Which calls are load-bearing: ADR 0012.",
            "",
            _calls_table(calls),
        ]
    for key, title in (("assets", "Asset sizes"), ("driver", "PostgreSQL driver (ADR 0011)")):
        section = results.get(key)
        if section and section.get("text"):
            parts += ["", f"## {title}", "", _code_block(section["text"])]
    stored_cost = results.get("cost")
    if stored_cost:
        parts += ["", "## Cost per 1M orders and per month (ADR 0010)"]
        for stage in ("prod", "dev"):
            if stage in stored_cost:
                parts += ["", f"### {stage}", "", stored_cost[stage]["markdown"].strip()]
    tp = results.get("throughput")
    if tp and tp.get("text"):
        parts += ["", "## Local stack throughput", "", _code_block(tp["text"])]
    return "\n".join(parts) + "\n"


def write_chart(results: Mapping[str, Any], path: Path = CHART_FILE) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    init = results["cold_init"]
    names = [f["function"] for f in init["functions"]]
    ratios = [f["ratio"] for f in init["functions"]]
    fig, ax = plt.subplots(figsize=(9, 4))
    colours = ["#2e7d32" if r <= init["goal_ratio"] else "#c62828" for r in ratios]
    ax.bar(names, ratios, color=colours)
    ax.axhline(init["goal_ratio"], color="black", linestyle="--", label="goal 1.3 x B")
    ax.axhline(1.0, color="grey", linestyle=":", label="B = boto3.client('sqs')")
    ax.set_ylabel("cold init / B (median)")
    ax.set_title("Cold init per function (make bench)")
    ax.tick_params(axis="x", rotation=35)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def with_readme_block(readme: str, results: Mapping[str, Any]) -> str:
    start, end = readme.index(README_START), readme.index(README_END)
    block = render_readme_block(results)
    return f"{readme[: start + len(README_START)]}\n{block}\n{readme[end:]}"


def write(results: dict[str, Any]) -> None:
    results["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d")
    results["machine"] = f"{os.cpu_count()} cores, {platform.machine()}"
    RESULTS_FILE.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    REPORT_FILE.write_text(render_report(results), encoding="utf-8")
    if "cold_init" in results:
        write_chart(results)
    README_FILE.write_text(
        with_readme_block(README_FILE.read_text(encoding="utf-8"), results), encoding="utf-8"
    )
