"""deploy/grafana: provisioning points at the paths deploy/compose.yaml mounts, and every dashboard is Grafana
dashboard JSON whose panels each query something the hub exports (or a recording rule), with unique ids, no
overlapping tiles and only template variables it defines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_prometheus_rules import recorded_names, unknown_references

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
EXPECTED = {"pipeline-overview", "banks", "offices", "reconciliation"}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
_VARIABLE = re.compile(r"\$\{?(\w+)")


def _dashboards() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def _datasource_uid() -> str:
    with (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").open(encoding="utf-8") as fh:
        sources = yaml.safe_load(fh)["datasources"]
    (prometheus,) = [s for s in sources if s["type"] == "prometheus"]
    return str(prometheus["uid"])


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    assert {p.stem for p in _dashboards()} == EXPECTED
    uids = [_load(p)["uid"] for p in _dashboards()]
    assert len(uids) == len(set(uids))


def test_provisioning_loads_the_directory_compose_mounts() -> None:
    with (GRAFANA / "provisioning" / "dashboards" / "sinergi.yml").open(encoding="utf-8") as fh:
        (provider,) = yaml.safe_load(fh)["providers"]
    with (REPO / "deploy" / "compose.yaml").open(encoding="utf-8") as fh:
        volumes = yaml.safe_load(fh)["services"]["grafana"]["volumes"]
    mounts = dict(str(v).split(":")[:2] for v in volumes)
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


@pytest.mark.parametrize("path", _dashboards(), ids=lambda p: p.stem)
def test_dashboard_is_grafana_json_with_unique_panel_ids_and_no_overlap(path: Path) -> None:
    doc = _load(path)
    assert 36 <= doc["schemaVersion"] <= 41
    assert doc["title"].startswith("sinergi / ") and doc["uid"].startswith("sinergi-")
    panels = _panels(doc)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    tiles = [(p["gridPos"]["x"], p["gridPos"]["y"], p["gridPos"]["w"], p["gridPos"]["h"], p["title"]) for p in panels]
    for i, (x, y, w, h, title) in enumerate(tiles):
        assert 0 <= x and x + w <= 24, title
        for x2, y2, w2, h2, other in tiles[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y, f"{title} overlaps {other}"


@pytest.mark.parametrize("path", _dashboards(), ids=lambda p: p.stem)
def test_every_panel_queries_what_the_hub_exports(path: Path) -> None:
    doc = _load(path)
    uid = _datasource_uid()
    defined = {v["name"] for v in doc["templating"]["list"]} | BUILTIN_VARIABLES
    recorded = recorded_names()
    problems: list[str] = []
    for panel in _panels(doc):
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        assert targets, f"{panel['title']}: no targets"
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            expr = target.get("expr", "")
            assert expr.strip(), f"{panel['title']}: target {target['refId']} has no expr"
            assert target["datasource"]["uid"] == uid
            unknown_variables = set(_VARIABLE.findall(expr)) - defined
            assert not unknown_variables, f"{panel['title']}: {unknown_variables}"
            problems += [f"{panel['title']}: {p}" for p in unknown_references(expr, recorded)]
    assert not problems, problems


@pytest.mark.parametrize("path", _dashboards(), ids=lambda p: p.stem)
def test_template_variables_read_label_values_of_exported_series(path: Path) -> None:
    recorded = recorded_names()
    for variable in _load(path)["templating"]["list"]:
        query = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        assert not unknown_references(selector, recorded), query
        assert not unknown_references(f"{selector.split('{')[0]}{{{label}=''}}", recorded), query
        assert variable["includeAll"] and variable["allValue"] == ".*"
