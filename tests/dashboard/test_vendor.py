"""The chart library served from static/ is the one the lock file names (``make vendor-js`` copies it)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vendored_chart_library_matches_the_lock():
    lock = json.loads((ROOT / "dashboard/js/package-lock.json").read_text())
    version = lock["packages"]["node_modules/chart.js"]["version"]
    manifest = json.loads((ROOT / "dashboard/js/package.json").read_text())
    assert manifest["dependencies"]["chart.js"] == version  # pinned exactly
    vendored = (ROOT / "static/dashboard/vendor/chart.umd.min.js").read_text()[:200]
    assert f"Chart.js v{version}" in vendored
    assert (ROOT / "static/dashboard/vendor/chart.js.LICENSE.md").exists()
