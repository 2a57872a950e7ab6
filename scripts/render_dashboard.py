"""Print the CloudWatch dashboard's layout from a synthesized template, offline.

    .venv/bin/python scripts/render_dashboard.py cdk.out/<stack>-dev.template.json

The dashboard is built by cdk-monitoring-constructs (infra/monitoring.py); this reads its
DashboardBody (tokens replaced by placeholders) and prints one line per dashboard row, each
widget as ``[title wxh]`` on CloudWatch's 24-column grid.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from infra.service import this_service


def _flatten(body: Any) -> str:
    if isinstance(body, str):
        return body
    parts = body["Fn::Join"][1]
    return "".join(part if isinstance(part, str) else "TOKEN" for part in parts)


def _title(widget: dict[str, Any]) -> str:
    props = widget.get("properties", {})
    if widget.get("type") == "text":
        first = str(props.get("markdown", "")).strip().splitlines()[0:1]
        text = (first[0] if first else "text").lstrip("# ").strip()
        return re.sub(r"\*\*\[(.*?)\]\(.*?\)\*\*", r"\1", text).replace("**", "")
    title = str(props.get("title", widget.get("type", "?")))
    # Section headers are markdown links to the console: keep the link text only.
    return re.sub(r"\*\*\[(.*?)\]\(.*?\)\*\*", r"\1", title).replace("**", "")


def render(template_path: Path) -> str:
    template = json.loads(template_path.read_text(encoding="utf-8"))
    lines: list[str] = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Dashboard":
            continue
        body = json.loads(_flatten(resource["Properties"]["DashboardBody"]))
        rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for widget in body["widgets"]:
            rows[int(widget.get("y", 0))].append(widget)
        lines.append(f"{logical_id}: {len(body['widgets'])} widgets")
        for y in sorted(rows):
            cells = [
                f"[{_title(w)} {w.get('width', 6)}x{w.get('height', 6)}]"
                for w in sorted(rows[y], key=lambda w: int(w.get("x", 0)))
            ]
            lines.append(f"  y={y:>3}: " + " ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(Path(sys.argv[1]) if len(sys.argv) > 1 else this_service().template_path("dev")))
