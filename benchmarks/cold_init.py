"""Cold init per function against a yardstick (issue 12, F04).

``python -m benchmarks.cold_init [--runs 15] [--only Api]``

Each function's handler module is imported in a fresh ``python3.13 -I -S`` from the built
assets (``benchmarks.lambda_image``: code asset, the layer recipe for this machine, the
runtime's boto3) in the function's template environment, as Lambda's init phase does. The
yardstick B is the same fresh interpreter running ``import boto3; boto3.client("sqs")``, the
least a Python function that talks to AWS loads. Runs alternate (function, B, function, B...)
so the machine's load hits both alike; the figure is the ratio of the medians of the time
spent importing (interpreter start-up, the same for both, is left out, which makes the ratio
stricter). Modules loaded and the packages that cost most (``-X importtime`` self time summed
per top-level package) come from one extra run.

The goal (issue 12) is every function <= 1.3 x B. It is a printed number, never a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks import lambda_image
from infra.functions import HANDLERS

GOAL_RATIO: Final = 1.3
YARDSTICK: Final = "import boto3; boto3.client('sqs')"

# Runs in the clean interpreter: the asset dirs first on sys.path, then the standard library.
_PROBE: Final = """
import sys, time
started = time.perf_counter()
sys.path[:0] = sys.argv[1:4]
target = sys.argv[4]
if target == "B":
    import boto3
    boto3.client("sqs")
else:
    import importlib
    importlib.import_module(target)
elapsed = time.perf_counter() - started
print(elapsed, len(sys.modules))
"""


@dataclass(frozen=True)
class FunctionInit:
    function: str
    module: str
    runs: int
    median_ms: float
    min_ms: float
    max_ms: float
    yardstick_median_ms: float
    ratio: float
    modules: int
    yardstick_modules: int
    top_packages_ms: dict[str, float] = field(default_factory=dict)

    @property
    def meets_goal(self) -> bool:
        return self.ratio <= GOAL_RATIO


@dataclass(frozen=True)
class ColdInit:
    runs: int
    functions: list[FunctionInit]

    def as_json(self) -> dict[str, Any]:
        return {
            "goal_ratio": GOAL_RATIO,
            "yardstick": YARDSTICK,
            "runs": self.runs,
            "functions": [asdict(f) for f in self.functions],
        }

    def lines(self) -> list[str]:
        out = [
            f"cold init: import of the handler vs B = `{YARDSTICK}`, "
            f"median of {self.runs} alternating runs, goal <= {GOAL_RATIO} x B",
            f"{'function':<18} {'ms':>6} {'min-max':>11} {'B ms':>6} {'x B':>5} "
            f"{'modules':>8}  goal  top packages (self ms)",
        ]
        for f in self.functions:
            top = ", ".join(f"{name} {ms:.0f}" for name, ms in list(f.top_packages_ms.items())[:5])
            out.append(
                f"{f.function:<18} {f.median_ms:6.0f} {f.min_ms:5.0f}-{f.max_ms:<5.0f} "
                f"{f.yardstick_median_ms:6.0f} {f.ratio:5.2f} "
                f"{f.modules:4d}/{f.yardstick_modules:<3d}"
                f"  {'met ' if f.meets_goal else 'MISS'}  {top}"
            )
        return out


@dataclass(frozen=True)
class _Image:
    code: Path
    layer: Path
    runtime: Path

    def argv(self, target: str, *extra: str) -> list[str]:
        return [
            lambda_image.interpreter(),
            "-I",
            "-S",
            *extra,
            "-c",
            _PROBE,
            str(self.code),
            str(self.layer),
            str(self.runtime),
            target,
        ]


def _run(image: _Image, target: str, env: Mapping[str, str]) -> tuple[float, int]:
    done = subprocess.run(
        image.argv(target),
        check=False,
        env=dict(env),
        cwd=image.code,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"importing {target} failed:\n{done.stderr[-3000:]}")
    seconds, modules = done.stdout.split()
    return float(seconds) * 1000, int(modules)


def top_packages(image: _Image, target: str, env: Mapping[str, str]) -> dict[str, float]:
    """Self import time (ms) summed per top-level package, largest first (-X importtime)."""
    done = subprocess.run(
        image.argv(target, "-X", "importtime"),
        check=True,
        env=dict(env),
        cwd=image.code,
        capture_output=True,
        text=True,
    )
    per_package: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        per_package[package] += int(parts[0])  # microseconds
    return {name: round(us / 1000, 1) for name, us in per_package.most_common(8)}


def measure(runs: int = 15, only: Sequence[str] = (), stage: str = "dev") -> ColdInit:
    code, _ = lambda_image.built_assets(stage)
    image = _Image(code, lambda_image.native_layer(), lambda_image.runtime_standin())
    functions = lambda_image.function_properties(lambda_image.template(stage))
    results: list[FunctionInit] = []
    for name, handler in HANDLERS.items():
        if only and name not in only:
            continue
        module = handler.rsplit(".", 1)[0]
        env = lambda_image.lambda_environment(name, functions[name], task_root=str(code))
        # One unmeasured pair first: the page cache, not the function, pays for the first read.
        _run(image, module, env)
        _run(image, "B", env)
        mine: list[tuple[float, int]] = []
        yardstick: list[tuple[float, int]] = []
        for _ in range(runs):
            mine.append(_run(image, module, env))
            yardstick.append(_run(image, "B", env))
        times = [ms for ms, _ in mine]
        b_median = statistics.median(ms for ms, _ in yardstick)
        median = statistics.median(times)
        results.append(
            FunctionInit(
                function=name,
                module=module,
                runs=runs,
                median_ms=round(median, 1),
                min_ms=round(min(times), 1),
                max_ms=round(max(times), 1),
                yardstick_median_ms=round(b_median, 1),
                ratio=round(median / b_median, 2),
                modules=mine[0][1],
                yardstick_modules=yardstick[0][1],
                top_packages_ms=top_packages(image, module, env),
            )
        )
    return ColdInit(runs=runs, functions=results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.cold_init", description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--only", action="append", default=[], metavar="FUNCTION")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure(runs=args.runs, only=args.only)
    print(json.dumps(result.as_json(), indent=1) if args.json else "\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
