"""deploy/prometheus: promtool accepts the config and every rules file, the promtool unit tests of the alerts pass,
every alert is labelled, annotated and documented, and every series a rule reads is one the hub exports
(services/metrics.py), with label names it really has.

The PromQL reference parser here is also used by test_grafana_dashboards.py.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.supervisor import WORKERS

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
METRICS_PY = REPO / "services" / "metrics.py"
README = REPO / "README.md"

SEVERITIES = {"critical", "warning"}
# Template variables an annotation may print: bounded label values only (never a person, account or VA).
ANNOTATION_LABELS = {
    "api",
    "endpoint",
    "partner",
    "stage",
    "topic",
    "office",
    "bank",
    "kind",
    "reason",
    "job",
    "instance",
}
# Series Prometheus itself provides.
BUILTIN_SERIES: dict[str, set[str] | None] = {"up": {"job", "instance"}, "ALERTS": None}
TARGET_LABELS = {"job", "instance"}

PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def require_binary(name: str) -> str:
    """The path of a Prometheus binary; skipped only where `make test` could not have installed it."""
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() == 0 and Path("/etc/debian_version").exists():
        pytest.fail(f"{name} is missing although this is Debian as root: `make system-deps` installs `prometheus`")
    pytest.skip(f"{name} is not installed (Debian package `prometheus`; `make test` installs it as root on Debian)")


# --- what the hub exports ----------------------------------------------------------------------------------------
@cache
def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, from every Counter/Gauge/Histogram defined in services/metrics.py."""
    series: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(METRICS_PY.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        kind = node.func.id
        if kind not in {"Counter", "Gauge", "Histogram"} or not node.args:
            continue
        name = ast.literal_eval(node.args[0])
        label_node = node.args[2] if len(node.args) > 2 else None
        for kw in node.keywords:
            if kw.arg == "labelnames":
                label_node = kw.value
        labels = set(ast.literal_eval(label_node)) if label_node is not None else set()
        if kind == "Counter":
            base = name.removesuffix("_total")
            series[f"{base}_total"] = labels
            series[f"{base}_created"] = labels
        elif kind == "Gauge":
            series[name] = labels
        else:
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
            series[f"{name}_created"] = labels
    return series


def references(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names matched on) for every selector of a PromQL expression."""
    text = _GROUPING.sub(" ", _RANGE.sub(" ", expr))
    found: list[tuple[str, set[str]]] = []
    for match in _SELECTOR.finditer(text):
        name, braces, call = match.groups()
        if call or name.lower() in PROMQL_KEYWORDS:
            continue  # a function or aggregation, or an operator keyword
        labels = set(_MATCHER.findall(_STRING.sub('""', braces))) if braces else set()
        found.append((name, labels))
    return found


def unknown_references(expr: str, recorded: set[str]) -> list[str]:
    """What in `expr` the hub does not export: unknown series, or label names a series does not have."""
    problems: list[str] = []
    exported = exported_series()
    for name, labels in references(expr):
        if name in recorded:
            continue
        if name in BUILTIN_SERIES:
            allowed = BUILTIN_SERIES[name]
        elif name in exported:
            allowed = exported[name] | TARGET_LABELS
        else:
            problems.append(f"series {name} is not defined in services/metrics.py")
            continue
        if allowed is not None and not labels <= allowed:
            problems.append(f"{name} has no label {sorted(labels - allowed)} (has {sorted(allowed)})")
    return problems


# --- the rules ---------------------------------------------------------------------------------------------------
def _load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict)
    return doc


def all_rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in _load(path)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def test_there_are_rules_files() -> None:
    assert {p.name for p in RULE_FILES} >= {"sinergi-alerts.yml", "sinergi-recording.yml"}


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_resolves_the_rule_files() -> None:
    promtool = require_binary("promtool")
    config = PROMETHEUS_DIR / "prometheus.yml"
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout, result.stdout


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_of_the_alerts_pass(path: Path) -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_duration_and_annotations_without_personal_data() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alerts():
        name = rule["alert"]
        assert name.startswith("Sinergi"), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        assert "for" in rule, f"{name}: no `for:`"
        annotations = rule.get("annotations", {})
        assert {"summary", "description", "runbook"} <= set(annotations), name
        for text in annotations.values():
            printed = set(re.findall(r"\$labels\.([a-zA-Z_]+)", text))
            assert printed <= ANNOTATION_LABELS, f"{name} prints {printed - ANNOTATION_LABELS}"


def test_recording_rules_are_named_level_metric_operations_and_defined_once() -> None:
    records = [rule["record"] for rule in all_rules() if "record" in rule]
    assert len(records) == len(set(records))
    for name in records:
        assert re.fullmatch(r"sinergi:[a-z0-9_]+:[a-z0-9_]+", name), name


def test_every_series_a_rule_reads_is_exported_by_the_hub() -> None:
    recorded = recorded_names()
    problems = {
        rule.get("alert") or rule["record"]: unknown_references(rule["expr"], recorded)
        for rule in all_rules()
        if unknown_references(rule["expr"], recorded)
    }
    assert not problems, problems


def test_the_reference_parser_sees_series_and_matchers_but_not_functions_or_labels() -> None:
    expr = 'sum by (api) (rate(x_total{outcome=~"a|b", api!="z"}[5m])) / on (api) y:z:w > bool 0.5 or vector(0)'
    assert references(expr) == [("x_total", {"outcome", "api"}), ("y:z:w", set())]
    assert unknown_references('sinergi_http_requests_total{nope="1"}', set())


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Dashboards and alerts")
    end = text.index("\n### ", start + 1)
    return text[start:end]


def test_every_alert_and_its_threshold_is_documented_in_the_readme() -> None:
    section = _readme_section()
    missing = [rule["alert"] for rule in alerts() if rule["alert"] not in section]
    assert not missing, f"README.md, Dashboards and alerts: {missing}"


def test_the_scrape_config_has_one_job_per_hub_process() -> None:
    config = _load(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    expected = {"sinergi-bank-api", "sinergi-kbri-api", "sinergi-webhooks"}
    expected |= {"sinergi-" + w.replace("_", "-") for w in WORKERS}
    assert jobs - {"prometheus"} == expected
    assert config["rule_files"] == ["rules/*.yml"]
