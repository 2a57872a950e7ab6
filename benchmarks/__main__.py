"""``make bench``: every benchmark of issue 12 in one run, then docs/performance.*.

``python -m benchmarks [--write] [--runs 15] [--orders 10] [--throughput-orders 100]
[--skip driver] ...``

Runs, in this order, each printing its numbers as it finishes:
1. ``cold_init``: each function's init against ``boto3.client("sqs")`` (goal <= 1.3 x);
2. ``assets``: code asset and layer, zipped and unzipped, top packages;
3. ``driver``: psycopg (shipped) against pg8000 on size, cold import and query latency;
4. ``calls``: AWS calls, state transitions and invocations per order, happy and compensated
   (goals: <= 6 calls, 4 transitions);
5. ``cost``: cost per million orders from the synthesized templates and the measured calls,
   Standard and Express side by side, and the fixed cost per month of each stage;
6. ``throughput``: orders/s and CPU per order of the local stack.

``--write`` stores everything in docs/performance.json (its ``order_profile`` gets the measured
calls, transitions and invocations; the rest of the profile are the assumptions
``benchmarks/cost.py`` documents), renders docs/performance.md and docs/performance.png, and
puts the summary into the README between its performance markers. Nothing here is a test: the
goals are printed with their measured values, met or missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import report

PARTS = ("cold_init", "assets", "driver", "calls", "cost", "throughput")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks", description=__doc__)
    parser.add_argument("--write", action="store_true", help="write docs/performance.*")
    parser.add_argument("--runs", type=int, default=15, help="cold-init runs per function")
    parser.add_argument("--orders", type=int, default=10, help="orders per kind for calls")
    parser.add_argument("--throughput-orders", type=int, default=100)
    parser.add_argument("--skip", action="append", default=[], choices=PARTS)
    args = parser.parse_args(argv)

    results: dict[str, Any] = report.load()
    started = time.monotonic()

    def step(name: str, run: Callable[[], Any]) -> None:
        if name in args.skip:
            print(f"== {name}: skipped (stored figures kept)", flush=True)
            return
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        result = run()
        text = report.lines_of(result)
        results[name] = {**result.as_json(), "text": text}
        print("\n".join(text), flush=True)
        print(f"   ({time.monotonic() - t0:.0f} s)\n", flush=True)

    from benchmarks import assets, calls, cold_init, driver, throughput

    step("cold_init", lambda: cold_init.measure(runs=args.runs))
    step("assets", assets.measure)
    step("driver", driver.measure)
    step("calls", lambda: calls.measure(args.orders))
    if "calls" in results:
        results["order_profile"] = report.profile_with_calls(
            results["order_profile"], results["calls"]
        )
    step("cost", lambda: report.cost_report(results["order_profile"]))
    step("throughput", lambda: throughput.measure(args.throughput_orders))

    results["seconds"] = round(time.monotonic() - started)
    print("== goals")
    goals = report.goals(results)
    for line in goals:
        print(f"   {line}")
    if args.write:
        report.write(results)
        print(f"wrote {', '.join(str(p) for p in report.WRITTEN)} and the README summary")
    print(f"make bench: {results['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
