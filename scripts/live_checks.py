#!/usr/bin/env python3
"""The Prometheus-side assertions of scripts/check-live, against a live Prometheus.

    live_checks.py ports N
    live_checks.py metrics METRICS.txt
    live_checks.py wait-targets PROM JOB N_UP TIMEOUT_S
    live_checks.py leaders PROM
    live_checks.py dashboard PROM DASHBOARD.json --var namespace=NS --var job=JOB
                             [--rate-interval 15s] [--range 60s]
    live_checks.py rules PROM RULES.yaml
    live_checks.py alerts PROM RULES.yaml [--expect ALERT=why ...]

PROM is the base URL of a Prometheus (http://127.0.0.1:PORT). Each command prints what it saw
and exits 0 when the check holds, 1 when it does not, 2 on a usage or connection error.
Standard library only, except `rules` and `alerts`, which read the rule file with PyYAML.

What "returns data" means for a dashboard query (`dashboard`): the instant query at the time
of the check returns at least one series whose value is a number (not NaN). A counter that is 0
is data (every labelled series is created at 0 on start, so increase() over it is a real 0). A
series whose value is NaN is not: histogram_quantile() over a window without observations
gives NaN, which Grafana draws as a gap. Series counts of each kind are printed per query.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The variable syntax and the contract metric names, as the dashboard linter knows them.
from lint_dashboard import _HISTOGRAMS, KNOWN_METRICS, VAR_RE  # noqa: E402


class Unreachable(Exception):
    pass


def api(prom: str, path: str, **params) -> dict:
    """GET PROM/api/v1/PATH?params; the `data` member of a successful answer."""
    qs = urllib.parse.urlencode([("match[]" if k == "match_" else k, v) for k, vs in params.items()
                                 for v in (vs if isinstance(vs, list) else [vs])])
    url = f"{prom}/api/v1/{path}" + (f"?{qs}" if qs else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            raise Unreachable(f"{url}: HTTP {e.code}") from e
    except (OSError, ValueError) as e:
        raise Unreachable(f"{url}: {e}") from e
    if body.get("status") != "success":
        raise Unreachable(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def instant(prom: str, expr: str) -> list[tuple[dict, float]]:
    """(labels, value) of each series an instant query returns now."""
    data = api(prom, "query", query=expr)
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        return [(s["metric"], float(s["value"][1])) for s in result]
    if kind == "scalar":
        return [({}, float(result[1]))]
    raise Unreachable(f"{expr}: unexpected result type {kind}")


# --- ports -----------------------------------------------------------------------------------

def cmd_ports(a) -> int:
    """N distinct free TCP ports on 127.0.0.1 (all held open until every one is chosen)."""
    socks = []
    try:
        for _ in range(a.n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print(" ".join(str(s.getsockname()[1]) for s in socks))
    finally:
        for s in socks:
            s.close()
    return 0


# --- metrics ---------------------------------------------------------------------------------

def contract_metrics() -> set[str]:
    """The wxkeeper_ metric names of CONTRACT.md's table, as scripts/lint_dashboard.py lists
    them (histograms by their base name)."""
    hist = set(_HISTOGRAMS)
    return {m for m in KNOWN_METRICS if m.startswith("wxkeeper_")
            and not any(m == h + sfx for h in hist for sfx in ("_bucket", "_sum", "_count"))} | hist


def cmd_metrics(a) -> int:
    """promtool check metrics on a live exposition, and every contract metric present.

    A parse error fails. Lint findings about a name CONTRACT.md fixes (or a process_* metric of
    the client library) are printed as warnings: renaming is a breaking change the contract
    forbids. A finding about any other name fails: that name can still be chosen well."""
    fixed = contract_metrics()
    body = open(a.metrics, "rb").read()
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                       timeout=60)
    out = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
    rc = 0
    warnings = 0
    for line in out:
        name = line.split()[0] if line.split() else ""
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        if name in fixed or base in fixed or f"{base}_total" in fixed or name.startswith("process_"):
            print(f"    warning (name fixed by CONTRACT.md, not renamed): {line}")
            warnings += 1
        else:
            print(f"    {line}")
            rc = 1
    if r.returncode not in (0, 3) or (r.returncode == 3 and not out):
        # 1: the exposition does not parse; 3: lint problems only (printed above).
        print(f"    promtool check metrics exited {r.returncode}")
        rc = 1
    typed = dict(re.findall(rb"^# TYPE (\S+) (\S+)$", body, re.M))
    missing = [m for m in sorted(fixed) if m.encode() not in typed]
    for m in missing:
        print(f"    {m}: in CONTRACT.md's table (scripts/lint_dashboard.py KNOWN_METRICS), not exported")
    if missing:
        rc = 1
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    if rc == 0:
        print(f"    promtool check metrics: {len(out) - warnings} problems, {warnings} warnings; "
              f"all {len(fixed)} contract metrics exported ({samples} samples)")
    return rc


# --- targets and leaders ---------------------------------------------------------------------

def cmd_wait_targets(a) -> int:
    deadline = time.monotonic() + a.timeout
    seen = ""
    while True:
        try:
            ts = [t for t in api(a.prom, "targets", state="active")["activeTargets"]
                  if t["labels"].get("job") == a.job]
            up = [t for t in ts if t["health"] == "up"]
            seen = ", ".join(f"{t['labels'].get('pod', t['scrapeUrl'])}={t['health']}" for t in ts)
            if len(up) >= a.n:
                print(f"    {len(up)}/{len(ts)} targets up ({seen})")
                return 0
        except Unreachable as e:
            seen = str(e)
        if time.monotonic() > deadline:
            print(f"    after {a.timeout}s: {seen}")
            return 1
        time.sleep(0.5)


def cmd_leaders(a) -> int:
    """sum(wxkeeper_leader) == 1, and which pod it is."""
    total = instant(a.prom, "sum(wxkeeper_leader)")
    per = instant(a.prom, "wxkeeper_leader == 1")
    up = instant(a.prom, "up")
    who = ", ".join(s[0].get("pod", "?") for s in per) or "none"
    ups = ", ".join(f"{s[0].get('pod', '?')}={s[1]:g}" for s in sorted(up, key=lambda s: s[0].get("pod", "")))
    v = total[0][1] if total else float("nan")
    print(f"    sum(wxkeeper_leader) = {v:g} (leader: {who}; up: {ups})")
    return 0 if v == 1 else 1


# --- dashboard -------------------------------------------------------------------------------

def grafana_regex_escape(v: str) -> str:
    """What Grafana does to a single variable value used in a =~ matcher."""
    return re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", v)


def substitute(expr: str, values: dict[str, str]) -> str:
    def rep(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(name)
        return values[name]
    return VAR_RE.sub(rep, expr)


def seconds(d: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", d)
    if not m:
        raise ValueError(f"bad duration {d!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def cmd_dashboard(a) -> int:
    dash = json.load(open(a.dashboard, encoding="utf-8"))
    wanted = dict(v.split("=", 1) for v in a.var)
    rng = seconds(a.range)
    values = {
        "__rate_interval": a.rate_interval, "__interval": a.interval, "__range": a.range,
        "__interval_ms": str(int(seconds(a.interval) * 1000)), "__range_s": str(int(rng)),
        "__range_ms": str(int(rng * 1000)),
    }
    rc = 0
    # Template variables first: each label_values() query must offer the value we scrape with,
    # which is then substituted (escaped as Grafana does) into every panel query.
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else str(q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
        if not m:
            print(f"    variable ${v['name']}: query {q!r} is not label_values(selector, label)")
            rc = 1
            continue
        selector = substitute(m.group(1), values)
        offered = api(a.prom, f"label/{m.group(2)}/values", match_=selector)
        want = wanted.get(v["name"])
        ok = want in offered
        print(f"    variable ${v['name']}: {q} -> {offered}" + ("" if ok else f", lacks {want!r}"))
        if not ok:
            rc = 1
        values[v["name"]] = grafana_regex_escape(want or "")

    panels, flat = list(dash.get("panels", [])), []
    while panels:
        p = panels.pop(0)
        flat.append(p)
        panels.extend(p.get("panels") or [])
    rows, empty = [], []
    for p in flat:
        for t in p.get("targets") or []:
            expr = t.get("expr")
            if not expr:
                continue
            label = f"{p.get('title')} [{t.get('refId')}]"
            try:
                q = substitute(expr, values)
                series = instant(a.prom, q)
            except (KeyError, Unreachable) as e:
                rows.append((label, "-", "-", "-", f"ERROR {e}"))
                empty.append(label)
                continue
            numeric = [s for s in series if not math.isnan(s[1])]
            nonzero = [s for s in numeric if s[1] != 0]
            if numeric:
                verdict = "ok"
            elif series:
                verdict = "EMPTY (only NaN)"
            else:
                verdict = "EMPTY (no series)"
            if not numeric:
                empty.append(label)
            rows.append((label, len(series), len(numeric), len(nonzero), verdict))
    w = max(len(r[0]) for r in rows) if rows else 10
    print(f"    {'panel [query]':<{w}}  series  numeric  nonzero  verdict")
    for r in rows:
        print(f"    {r[0]:<{w}}  {r[1]!s:>6}  {r[2]!s:>7}  {r[3]!s:>7}  {r[4]}")
    print(f"    {len(rows) - len(empty)}/{len(rows)} queries return data "
          f"($__rate_interval={a.rate_interval}, instant queries at now)")
    for label in empty:
        print(f"    no data: {label}")
    return 1 if empty or rc else 0


# --- rules and alerts ------------------------------------------------------------------------

def rule_file_alerts(path: str) -> dict[str, str]:
    import yaml
    spec = yaml.safe_load(open(path, encoding="utf-8"))
    return {r["alert"]: g["name"] for g in spec["groups"] for r in g["rules"] if "alert" in r}


def loaded_alert_rules(prom: str) -> dict[str, dict]:
    out = {}
    for g in api(prom, "rules", type="alert")["groups"]:
        for r in g["rules"]:
            out[r["name"]] = dict(r, group=g["name"])
    return out


def cmd_rules(a) -> int:
    """Every alert of the rule file is loaded, in its group, and evaluates without error."""
    want = rule_file_alerts(a.rules)
    deadline = time.monotonic() + 10
    while True:  # wait for a first evaluation of every rule (evaluation_interval is 1 s)
        have = loaded_alert_rules(a.prom)
        if all(have.get(n, {}).get("health") not in (None, "unknown") for n in want) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rc = 0
    for name in sorted(want):
        r = have.get(name)
        if r is None:
            print(f"    {name}: not loaded")
            rc = 1
        elif r["group"] != want[name] or r.get("health") != "ok":
            print(f"    {name}: group {r['group']}, health {r.get('health')} {r.get('lastError', '')}")
            rc = 1
    for name in sorted(set(have) - set(want)):
        print(f"    {name}: loaded but not in {a.rules}")
        rc = 1
    if rc == 0:
        print(f"    {len(want)} alert rules loaded, each evaluated with health ok: "
              + ", ".join(sorted(want)))
    return rc


def cmd_alerts(a) -> int:
    """No alert active (pending or firing: its condition holds now) but the expected ones, and
    each expected one active, with the namespace/job/platform labels routing needs."""
    expect = dict(e.split("=", 1) for e in a.expect)
    known = rule_file_alerts(a.rules)
    for n in expect:
        if n not in known:
            print(f"    --expect {n}: no such alert in {a.rules}")
            return 2
    active = api(a.prom, "alerts")["alerts"]
    rc = 0
    seen = set()
    for al in sorted(active, key=lambda x: x["labels"]["alertname"]):
        name = al["labels"]["alertname"]
        labels = {k: v for k, v in al["labels"].items() if k not in ("alertname", "severity")}
        lab = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        val = float(al.get("value", "nan"))
        if name in expect:
            seen.add(name)
            missing = [k for k in ("namespace", "job", "platform") if k not in labels]
            tag = "expected" if not missing else f"expected, but lacks labels {missing}"
            if missing:
                rc = 1
            print(f"    {al['state']:<7} {name}{{{lab}}} value={val:g}: {tag} ({expect[name]})")
        else:
            print(f"    {al['state']:<7} {name}{{{lab}}} value={val:g}: UNEXPECTED")
            rc = 1
    for name in sorted(set(expect) - seen):
        print(f"    {name}: expected to be active ({expect[name]}), is not")
        rc = 1
    quiet = sorted(set(known) - {al['labels']['alertname'] for al in active})
    print(f"    inactive: {', '.join(quiet) or 'none'}")
    return rc


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="live_checks.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("metrics")
    p.add_argument("metrics")
    p = sub.add_parser("wait-targets")
    p.add_argument("prom")
    p.add_argument("job")
    p.add_argument("n", type=int)
    p.add_argument("timeout", type=float)
    p = sub.add_parser("leaders")
    p.add_argument("prom")
    p = sub.add_parser("dashboard")
    p.add_argument("prom")
    p.add_argument("dashboard")
    p.add_argument("--var", action="append", default=[], help="NAME=VALUE")
    p.add_argument("--rate-interval", default="15s")
    p.add_argument("--interval", default="1s")
    p.add_argument("--range", default="1m")
    p = sub.add_parser("rules")
    p.add_argument("prom")
    p.add_argument("rules")
    p = sub.add_parser("alerts")
    p.add_argument("prom")
    p.add_argument("rules")
    p.add_argument("--expect", action="append", default=[], help="ALERT=why")
    a = ap.parse_args(argv[1:])
    fn = {"ports": cmd_ports, "metrics": cmd_metrics, "wait-targets": cmd_wait_targets,
          "leaders": cmd_leaders, "dashboard": cmd_dashboard, "rules": cmd_rules,
          "alerts": cmd_alerts}[a.cmd]
    try:
        return fn(a)
    except Unreachable as e:
        print(f"    {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
