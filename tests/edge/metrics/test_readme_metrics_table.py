"""README's metrics table lists every series name /metrics exposes, and none it does not: a
dashboard is built from that table, so a metric added or renamed in edge/metrics must show
there (`_oee_quality_ratio` in a cell continues the `edge_gateway_` name before it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics.collector import registry_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from plant_status import FixedStatus

README = Path(__file__).resolve().parents[3] / "README.md"
PREFIX = "edge_gateway_"


def exposed() -> set[str]:
    """Series family names as a scraper sees them: counters with `_total`, info with `_info`
    (histogram families keep their base name)."""
    text = generate_latest(registry_for(FixedStatus())).decode()
    suffix = {"counter": "_total", "info": "_info"}
    return {f.name + suffix.get(f.type, "") for f in text_string_to_metric_families(text)}


def documented() -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        for token in re.findall(r"`([^`]+)`", line.split(" | ", 1)[0]):
            names.add(PREFIX + token.lstrip("_") if token.startswith("_") else token)
    return names


def test_every_exposed_metric_is_in_the_readme_table() -> None:
    missing = sorted(exposed() - documented())
    assert missing == [], f"/metrics exposes names README's table lacks: {missing}"


def test_the_readme_table_names_only_exposed_metrics() -> None:
    stale = sorted(documented() - exposed())
    assert stale == [], f"README's metrics table names metrics /metrics lacks: {stale}"
