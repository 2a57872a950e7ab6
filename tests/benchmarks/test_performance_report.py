"""docs/performance.md, its chart's data and the README summary show what `make bench` stored
in docs/performance.json (nothing is edited by hand), and the stored run is the current one:
the calls it counted are the ones the order profile the cost model reads says."""

from __future__ import annotations

from benchmarks import report


def test_the_report_and_the_readme_show_the_stored_numbers() -> None:
    """Fails if: docs/performance.md or the README block was edited by hand, or report.py
    changed without `make bench` being run again."""
    stored = report.load()

    assert report.REPORT_FILE.read_text(encoding="utf-8") == report.render_report(stored)
    readme = report.README_FILE.read_text(encoding="utf-8")
    assert report.with_readme_block(readme, stored) == readme


def test_the_cost_model_reads_the_calls_the_benchmark_measured() -> None:
    """Fails if: the order profile's measured counts (calls, transitions, invocations) drift
    from the calls benchmark's stored result, e.g. a hand edit of one of them."""
    stored = report.load()

    assert (
        report.profile_with_calls(stored["order_profile"], stored["calls"])
        == stored["order_profile"]
    )
    happy = stored["order_profile"]["happy"]
    assert sum(happy["aws_calls"].values()) == stored["calls"]["kinds"]["happy"]["total_calls"]
