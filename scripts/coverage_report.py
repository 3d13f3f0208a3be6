"""Line and branch coverage per app, from the .coverage data `make test` just wrote (pytest --cov). Exits 1 when an
app's line coverage is under COVERAGE_MIN_LINES (90 % by default)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import coverage

APPS = ("project", "accounts", "webhooks", "endpoints", "analytics", "billing", "alerts", "relay")


def main() -> int:
    minimum = float(os.environ.get("COVERAGE_MIN_LINES", "90"))
    cov = coverage.Coverage()
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "coverage.json"
        cov.json_report(outfile=str(out))
        files = json.loads(out.read_text())["files"]
    totals = {app: [0, 0, 0, 0] for app in APPS}  # statements, covered, branches, covered branches
    for name, data in files.items():
        app = name.split("/", 1)[0]
        if app in totals:
            summary = data["summary"]
            total = totals[app]
            total[0] += summary["num_statements"]
            total[1] += summary["covered_lines"]
            total[2] += summary.get("num_branches", 0)
            total[3] += summary.get("covered_branches", 0)
    print(f"{'app':<10} {'lines':>8} {'branches':>9}   statements  branches")
    failing = []
    for app, (statements, covered, branches, covered_branches) in totals.items():
        lines_pct = 100 * covered / statements if statements else 100.0
        branch_pct = 100 * covered_branches / branches if branches else 100.0
        print(f"{app:<10} {lines_pct:>7.1f}% {branch_pct:>8.1f}%   {statements:>10,}  {branches:>8,}")
        if lines_pct < minimum:
            failing.append(app)
    if failing:
        print(f"coverage: under {minimum:g} % of lines: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
