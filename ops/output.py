"""What a command prints: a human table by default, one JSON document with ``--json``.

Every command returns a ``Report``; the data is the JSON document (stable keys, for scripts
and runbooks) and the text is for a terminal. Refusals are reports too (exit code 1), so a
script sees why in ``--json`` mode as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from ops.errors import EXIT_OK, EXIT_PROBLEM


@dataclass(frozen=True)
class Report:
    data: dict[str, Any]
    text: str
    exit_code: int = EXIT_OK


def refusal(reason: str, *, instead: str, **data: Any) -> Report:
    """A command that decided not to act: the reason and what to do instead."""
    payload = {"refused": True, "reason": reason, "instead": instead, **data}
    return Report(payload, f"REFUSED: {reason}\nInstead: {instead}", EXIT_PROBLEM)


def emit(report: Report, *, as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps(report.data, default=_json_default, indent=2, sort_keys=True))
    else:
        out.write(report.text.rstrip())
    out.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_json_default, sort_keys=True)
    return str(value)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = list(pairs)
    width = max((len(key) for key, _ in rows), default=0)
    return "\n".join(f"{key.ljust(width)}  {fmt(value)}" for key, value in rows)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "  (none)"
    cells = [[fmt(row.get(column)) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    header = "  ".join(column.upper().ljust(widths[i]) for i, column in enumerate(columns))
    body = ["  ".join(line[i].ljust(widths[i]) for i in range(len(columns))) for line in cells]
    return "\n".join(["  " + header.rstrip()] + ["  " + line.rstrip() for line in body])


def iso_from_epoch_ms(value: str | int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
