#!/usr/bin/env python3
"""Lint the wxkeeper Grafana dashboard.

    python3 scripts/lint_dashboard.py dashboards/wxkeeper.json

Checks, each failure one line naming the panel:

- fixed uid (`wxkeeper`), schemaVersion >= 39, no `__inputs` (a dashboard exported "for sharing
  externally" cannot be provisioned by the sidecar);
- a `datasource` variable of type datasource for prometheus, and query variables `namespace`
  and `job` built with label_values on wxkeeper_build_info;
- every panel: an allowed type (timeseries, stat, table, heatmap: no Angular `graph` or
  `singlestat`, no rows), a unique id, a title, a description, a unit
  (fieldConfig.defaults.unit), the `${datasource}` data source on the panel and on every query;
- every query: rate()/irate()/increase() over `$__rate_interval`; every selector of a
  wxkeeper or process metric filtered by namespace=~"$namespace" and job=~"$job"; only metric
  names the service exports (CONTRACT.md), and every one of the metrics the dashboard must show;
- every query parses as PromQL: the Grafana variables are substituted and each expression is
  written as a recording rule into a temporary rule file checked with `promtool check rules`
  (the offline PromQL parser; promtool comes from Debian's `prometheus` package).

Standard library only; needs `promtool` on PATH (or PROMTOOL=/path/to/promtool).
Exit status 0 when clean, 1 on any finding, 2 on a usage or environment error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

EXPECTED_UID = "wxkeeper"
MIN_SCHEMA_VERSION = 39
ALLOWED_PANEL_TYPES = {"timeseries", "stat", "table", "heatmap"}
DATASOURCE_REFS = {"${datasource}", "$datasource"}
RATE_FUNCS = ("rate", "irate", "increase")

# Metric names wxkeeper exports (shared/CONTRACT.md, "Metrics"), the standard process metrics,
# and Prometheus's own `up`. Histograms export _bucket, _sum and _count.
_HISTOGRAMS = [
    "wxkeeper_lease_renew_duration_seconds",
    "wxkeeper_refresh_interval_seconds",
    "wxkeeper_wechat_api_request_duration_seconds",
]
KNOWN_METRICS = {
    "wxkeeper_leader",
    "wxkeeper_lease_epoch",
    "wxkeeper_lease_transitions_total",
    "wxkeeper_lease_self_fence_total",
    "wxkeeper_fenced_writes_rejected_total",
    "wxkeeper_refresh_total",
    "wxkeeper_refresh_last_interval_seconds",
    "wxkeeper_credential_expiry_timestamp_seconds",
    "wxkeeper_credential_obtained_timestamp_seconds",
    "wxkeeper_ticket_received_timestamp_seconds",
    "wxkeeper_pre_auth_codes_ready",
    "wxkeeper_callback_requests_total",
    "wxkeeper_wechat_api_requests_total",
    "wxkeeper_token_api_requests_total",
    "wxkeeper_pre_auth_codes_issued_total",
    "wxkeeper_start_push_ticket_total",
    "wxkeeper_build_info",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "process_threads",
    "up",
} | {h + s for h in _HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

# What the dashboard must show (the panels the issue asked for).
REQUIRED_METRICS = [
    "wxkeeper_credential_expiry_timestamp_seconds",
    "wxkeeper_refresh_interval_seconds_bucket",
    "wxkeeper_refresh_last_interval_seconds",
    "wxkeeper_refresh_total",
    "wxkeeper_leader",
    "wxkeeper_lease_transitions_total",
    "wxkeeper_lease_epoch",
    "wxkeeper_lease_self_fence_total",
    "wxkeeper_fenced_writes_rejected_total",
    "wxkeeper_ticket_received_timestamp_seconds",
    "wxkeeper_callback_requests_total",
    "wxkeeper_wechat_api_requests_total",
    "wxkeeper_wechat_api_request_duration_seconds_bucket",
    "wxkeeper_token_api_requests_total",
    "wxkeeper_pre_auth_codes_ready",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
]

# Substitutes for Grafana's built-in interval variables when parsing.
BUILTIN_VARS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
METRIC_NAME_RE = re.compile(r"(?<![\w:\"$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
# Words that can stand where a metric name could but are PromQL syntax, not metrics.
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2",
    # aggregation operators (may be followed by `by (...)` rather than by their argument)
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}


def substitute_vars(expr: str) -> str:
    """Replace Grafana variables: inside a quoted string by `.*` (every use of ours is a regex
    matcher), elsewhere by a duration (built-ins) or `1`."""
    out = []
    in_str = None
    i = 0
    while i < len(expr):
        c = expr[i]
        if in_str:
            if c == "\\" and i + 1 < len(expr):
                out.append(expr[i:i + 2])
                i += 2
                continue
            if c == in_str:
                in_str = None
        elif c in "\"'`":
            in_str = c
        m = VAR_RE.match(expr, i) if c in "$[" else None
        if m and not (c == "[" and not m.group(3)):
            name = m.group(1) or m.group(2) or m.group(3)
            if name in BUILTIN_VARS:
                out.append(BUILTIN_VARS[name])
            else:
                out.append(".*" if in_str else "1")
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def find_call_args(expr: str, func: str):
    """Yield the argument text of every call of `func` in expr."""
    for m in re.finditer(r"\b%s\s*\(" % func, expr):
        depth, j = 1, m.end()
        while j < len(expr) and depth:
            if expr[j] == "(":
                depth += 1
            elif expr[j] == ")":
                depth -= 1
            j += 1
        yield expr[m.end():j - 1]


def metric_selectors(expr: str):
    """(name, matcher-block-or-None) for every metric name in expr, skipping label names inside
    by(...)/without(...)/on(...)/ignoring(...)/group_x(...), function names, keywords and
    durations. Heuristic but sufficient for our own dashboard."""
    # Drop label lists of grouping/matching modifiers.
    cleaned = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    # Drop range/subquery selectors and string contents (but keep {} blocks for matching).
    cleaned = re.sub(r"\[[^\]]*\]", "", cleaned)
    for m in METRIC_NAME_RE.finditer(cleaned):
        name, block = m.group(1), m.group(2)
        rest = cleaned[m.end(1):].lstrip()
        if name in PROMQL_WORDS:
            continue
        if block is None and rest.startswith("("):
            continue  # a function call
        if re.fullmatch(r"[0-9.]+[smhdwy]?", name):
            continue
        yield name, block


def lint(path: str, promtool: str) -> list[str]:
    errors: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return [f"{path}: cannot read dashboard JSON: {e}"]

    if dash.get("uid") != EXPECTED_UID:
        errors.append(f"dashboard uid is {dash.get('uid')!r}, expected {EXPECTED_UID!r}")
    sv = dash.get("schemaVersion")
    if not isinstance(sv, int) or sv < MIN_SCHEMA_VERSION:
        errors.append(f"schemaVersion is {sv!r}, expected >= {MIN_SCHEMA_VERSION}")
    if "__inputs" in dash or "${DS_" in json.dumps(dash):
        errors.append("dashboard was exported 'for sharing externally' (__inputs / ${DS_...}); "
                      "export it without that option")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds_vars = [v for v in variables.values()
               if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not any(v.get("name") == "datasource" for v in ds_vars):
        errors.append("no template variable `datasource` of type datasource with query prometheus")
    for name in ("namespace", "job"):
        v = variables.get(name)
        if v is None:
            errors.append(f"no template variable `{name}`")
            continue
        q = v.get("query")
        qtext = q.get("query", "") if isinstance(q, dict) else str(q or "")
        if v.get("type") != "query" or "label_values(" not in qtext or "wxkeeper_build_info" not in qtext:
            errors.append(f"variable `{name}` must be a query variable using "
                          f"label_values(wxkeeper_build_info..., {name})")
        if (v.get("datasource") or {}).get("uid") not in DATASOURCE_REFS:
            errors.append(f"variable `{name}` does not use the ${{datasource}} variable")

    panels = list(dash.get("panels", []))
    flat = []
    while panels:  # rows may nest panels; they are flagged below, but lint their children too
        p = panels.pop(0)
        flat.append(p)
        panels.extend(p.get("panels", []) or [])
    if not flat:
        errors.append("dashboard has no panels")

    seen_ids = set()
    exprs = []  # (label, expr)
    for p in flat:
        label = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in seen_ids:
            errors.append(f"{label}: duplicate panel id")
        seen_ids.add(p.get("id"))
        if p.get("type") not in ALLOWED_PANEL_TYPES:
            errors.append(f"{label}: type {p.get('type')!r} not allowed "
                          f"(allowed: {', '.join(sorted(ALLOWED_PANEL_TYPES))})")
        if not str(p.get("title", "")).strip():
            errors.append(f"{label}: no title")
        if not str(p.get("description", "")).strip():
            errors.append(f"{label}: no description")
        unit = ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
        if not unit:
            errors.append(f"{label}: no unit (fieldConfig.defaults.unit)")
        if "gridPos" not in p:
            errors.append(f"{label}: no gridPos")
        if (p.get("datasource") or {}).get("uid") not in DATASOURCE_REFS:
            errors.append(f"{label}: panel data source is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{label}: no queries")
        for t in targets:
            tl = f"{label} query {t.get('refId')}"
            if (t.get("datasource") or {}).get("uid") not in DATASOURCE_REFS:
                errors.append(f"{tl}: data source is not ${{datasource}}")
            expr = t.get("expr")
            if not expr or not str(expr).strip():
                errors.append(f"{tl}: no expr")
                continue
            exprs.append((tl, expr))

    used = set()
    for tl, expr in exprs:
        for func in RATE_FUNCS:
            for args in find_call_args(expr, func):
                ranges = re.findall(r"\[([^\]]*)\]", args)
                if not ranges:
                    errors.append(f"{tl}: {func}() without a range")
                for r in ranges:
                    if r.strip() not in ("$__rate_interval", "${__rate_interval}"):
                        errors.append(f"{tl}: {func}() over [{r}], use [$__rate_interval]")
        for name, block in metric_selectors(strip_strings_keep_matchers(expr)):
            used.add(name)
            if name not in KNOWN_METRICS:
                errors.append(f"{tl}: unknown metric {name!r} (not in CONTRACT.md's list)")
            if name.startswith(("wxkeeper_", "process_")):
                b = block or ""
                for lab in ("namespace", "job"):
                    if not re.search(r'\b%s\s*=~\s*"\$%s"' % (lab, lab), b):
                        errors.append(f'{tl}: selector of {name} lacks {lab}=~"${lab}"')
    for m in REQUIRED_METRICS:
        if m not in used:
            errors.append(f"no panel shows {m}")

    errors.extend(parse_with_promtool(exprs, promtool))
    return errors


def strip_strings_keep_matchers(expr: str) -> str:
    """Blank out string literals outside {...} (e.g. label_replace arguments) so their contents
    are not taken for metric names, keeping matcher values, which the namespace/job check
    reads."""
    out, depth, i = [], 0, 0
    while i < len(expr):
        c = expr[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        if c == '"':
            m = re.match(r'"(?:[^"\\]|\\.)*"', expr[i:])
            if m:
                out.append(m.group(0) if depth else '""')
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_with_promtool(exprs, promtool: str) -> list[str]:
    """Write each expression as a recording rule (one group per expression, so a failure names
    its panel) and let `promtool check rules` parse and type-check them."""
    if not exprs:
        return []
    groups = []
    for n, (tl, expr) in enumerate(exprs):
        groups.append({"name": f"q{n}: {tl}",
                       "rules": [{"record": "dashboard_lint:expr", "expr": substitute_vars(expr)}]})
    with tempfile.TemporaryDirectory(prefix="wxkeeper-dashlint-") as d:
        rules = os.path.join(d, "dashboard-exprs.rules.json")
        # JSON is YAML: promtool reads it, and no YAML library is needed here.
        with open(rules, "w", encoding="utf-8") as f:
            json.dump({"groups": groups}, f, indent=1)
        try:
            r = subprocess.run([promtool, "check", "rules", rules], capture_output=True,
                               text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return [f"promtool check rules could not run: {e}"]
        if r.returncode != 0:
            out = (r.stdout + r.stderr).strip().splitlines()
            return ["PromQL does not parse: " + line.strip() for line in out
                    if line.strip() and line.strip() != "FAILED:" and "SUCCESS" not in line
                    and not line.startswith("Checking")]
    return []


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DASHBOARD.json", file=sys.stderr)
        return 2
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        print("lint_dashboard: promtool not found (Debian package `prometheus`)", file=sys.stderr)
        return 2
    errors = lint(argv[1], promtool)
    for e in errors:
        print(f"{argv[1]}: {e}")
    if errors:
        print(f"lint_dashboard: {len(errors)} problem(s) in {argv[1]}")
        return 1
    with open(argv[1], encoding="utf-8") as f:
        dash = json.load(f)
    n_panels = len(dash.get("panels", []))
    n_exprs = sum(len(p.get("targets") or []) for p in dash.get("panels", []))
    print(f"lint_dashboard: {argv[1]} OK ({n_panels} panels, {n_exprs} queries parsed by promtool)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
