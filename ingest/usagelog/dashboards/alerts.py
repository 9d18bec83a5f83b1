"""Grafana alert rules evaluated without Grafana: ``usagelog alerts check``.

The rule files in ``grafana/provisioning/alerting/`` are what Grafana provisions. Each rule's
queries run against ClickHouse with the time range its ``relativeTimeRange`` gives at the
evaluation time (plugin macros expanded as the plugin's backend does; rules take no dashboard
variables). The result goes through the rule's expressions as Grafana's server-side
expressions do:

- a table with one numeric column is one number per row, labelled by the row's other columns;
  a time series (time, labels, value) is one series per label set;
- ``reduce`` (last, mean, min, max, sum, count, median; modes strict, dropNN, replaceNN) turns
  series into numbers and passes numbers through;
- ``threshold`` (gt, lt, gte, lte, eq, ne, within_range, outside_range and their ``_included``
  forms) and ``math`` (``$B > 5 && $B < 10``, arithmetic, ``abs``) give 1 or 0;
- the rule's ``condition`` decides: every label set where it is non-zero is an alert instance.

``for`` is honoured the way Grafana's scheduler does: an instance fires only when the condition
also held at every evaluation interval within the pending period (queries read what was stored
by each evaluation time, so past evaluations are what Grafana saw then); otherwise it is
``pending``. ``noDataState`` and ``execErrState`` decide what an empty result or an error means.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import math
import operator
import re
import statistics
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from usagelog.ingest.store import Store
from usagelog.ingest.timerange import parse_time

from .macros import MacroError, TimeRange, render_query
from .model import DATASOURCE_UID, DashboardError, grafana_dir
from .runner import Frame, run_sql

EXPRESSION_DATASOURCE = "__expr__"
Labels = tuple[tuple[str, str], ...]


class RuleError(DashboardError):
    """A rule file cannot be read, or a rule uses something this evaluator does not implement."""


@dataclass(frozen=True)
class Query:
    ref_id: str
    sql: str
    range_from: int  # seconds before the evaluation time
    range_to: int
    interval_ms: int
    datasource_uid: str


@dataclass(frozen=True)
class Rule:
    uid: str
    title: str
    folder: str
    group: str
    interval: int  # seconds
    condition: str
    queries: tuple[Query, ...]
    expressions: tuple[dict[str, Any], ...]
    pending: int  # seconds ("for")
    no_data_state: str
    exec_err_state: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    path: Path


@dataclass
class Instance:
    """One alert instance of one evaluation: its labels, the values of each step, its state."""

    rule: Rule
    labels: dict[str, str]
    value: float | None
    values: dict[str, float | None]
    state: str  # firing, pending, normal, nodata, error
    at: dt.datetime
    active_since: dt.datetime | None = None
    error: str = ""

    @property
    def summary(self) -> str:
        return render_template(
            self.rule.annotations.get("summary", self.rule.title), self.labels, self.values
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.uid,
            "title": self.rule.title,
            "state": self.state,
            "labels": self.labels,
            "value": self.value,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "active_since": self.active_since.isoformat().replace("+00:00", "Z")
            if self.active_since
            else None,
            "summary": self.summary,
            "error": self.error,
        }


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: Any) -> int:
    """Grafana's durations (``5m``, ``1h30m``, ``0s``) in whole seconds."""
    raw = str(text or "0s").strip()
    parts = _DURATION.findall(raw)
    if not parts or "".join(a + u for a, u in parts) != raw:
        raise RuleError(f"{raw!r} is not a duration like 1m, 5m or 1h30m")
    return int(sum(int(a) * _DURATION_SECONDS[u] for a, u in parts))


def _rule(item: dict[str, Any], group: dict[str, Any], path: Path) -> Rule:
    uid = str(item.get("uid", ""))
    queries: list[Query] = []
    expressions: list[dict[str, Any]] = []
    for data in item.get("data", []):
        model = data.get("model", {})
        ref_id = str(data.get("refId") or model.get("refId"))
        if data.get("datasourceUid") == EXPRESSION_DATASOURCE:
            expressions.append({**model, "refId": ref_id})
            continue
        span = data.get("relativeTimeRange", {})
        queries.append(
            Query(
                ref_id=ref_id,
                sql=str(model.get("rawSql", "")),
                range_from=int(span.get("from", 600)),
                range_to=int(span.get("to", 0)),
                interval_ms=int(model.get("intervalMs", 1000)),
                datasource_uid=str(data.get("datasourceUid", "")),
            )
        )
    return Rule(
        uid=uid,
        title=str(item.get("title", uid)),
        folder=str(group.get("folder", "")),
        group=str(group.get("name", "")),
        interval=parse_duration(group.get("interval", "1m")),
        condition=str(item.get("condition", "")),
        queries=tuple(queries),
        expressions=tuple(expressions),
        pending=parse_duration(item.get("for", "0s")),
        no_data_state=str(item.get("noDataState", "NoData")),
        exec_err_state=str(item.get("execErrState", "Error")),
        labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
        annotations={str(k): str(v) for k, v in (item.get("annotations") or {}).items()},
        path=path,
    )


def load_rules(directory: Path | None = None) -> list[Rule]:
    """Every rule in ``<grafana>/provisioning/alerting/*.yaml`` (contact points and policies skipped)."""
    folder = (directory or grafana_dir()) / "provisioning" / "alerting"
    rules = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RuleError(f"cannot read {path}: {exc}") from exc
        for group in document.get("groups", []) or []:
            for item in group.get("rules", []) or []:
                rules.append(_rule(item, group, path))
    return rules


# --- values --------------------------------------------------------------------------------


@dataclass
class Value:
    """A number or a series (times, values), with labels: what an expression step holds."""

    labels: Labels
    number: float | None = None
    series: list[float | None] | None = None


def _labels(mapping: Mapping[str, Any]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


def frame_values(frame: Frame) -> list[Value]:
    """A query result as Grafana's alerting reads it (numeric data, or time series)."""
    if not frame.rows:
        return []
    numbers = [i for i, k in enumerate(frame.kinds) if k == "number"]
    label_columns = [i for i, k in enumerate(frame.kinds) if k in ("string", "other")]
    if "time" in frame.kinds:
        t = frame.kinds.index("time")
        grouped: dict[Labels, list[tuple[Any, float | None]]] = {}
        for row in frame.rows:
            for v in numbers:
                labels = {frame.columns[i]: row[i] for i in label_columns}
                if len(numbers) > 1:
                    labels["__name__"] = frame.columns[v]
                key = _labels(labels)
                grouped.setdefault(key, []).append((row[t], None if row[v] is None else float(row[v])))
        return [
            Value(key, series=[v for _, v in sorted(points, key=lambda p: p[0])])
            for key, points in grouped.items()
        ]
    if len(numbers) != 1:
        raise RuleError(
            f"query {frame.ref_id} returned {len(numbers)} numeric columns; a table for alerting needs "
            "exactly one (its other columns become labels)"
        )
    seen: set[Labels] = set()
    values = []
    for row in frame.rows:
        key = _labels({frame.columns[i]: row[i] for i in label_columns})
        if key in seen:
            raise RuleError(f"query {frame.ref_id} returned two rows with the labels {dict(key)}")
        seen.add(key)
        value = row[numbers[0]]
        values.append(Value(key, number=None if value is None else float(value)))
    return values


def _reduce(values: list[Value], model: Mapping[str, Any]) -> list[Value]:
    reducer = str(model.get("reducer", "last"))
    settings = model.get("settings") or {}
    mode = str(settings.get("mode", ""))
    out = []
    for value in values:
        if value.series is None:
            out.append(Value(value.labels, number=value.number))
            continue
        points = list(value.series)
        if mode == "dropNN":
            points = [p for p in points if p is not None and not math.isnan(p)]
        elif mode == "replaceNN":
            replace = float(settings.get("replaceWithValue", 0))
            points = [replace if p is None or math.isnan(p) else p for p in points]
        elif any(p is None or math.isnan(p) for p in points):
            out.append(Value(value.labels, number=math.nan))
            continue
        clean = [p for p in points if p is not None]
        functions: dict[str, Callable[[list[float]], float]] = {
            "last": lambda xs: xs[-1],
            "mean": statistics.fmean,
            "min": min,
            "max": max,
            "sum": lambda xs: float(sum(xs)),
            "count": lambda xs: float(len(xs)),
            "median": statistics.median,
        }
        if reducer not in functions:
            raise RuleError(f"reducer {reducer!r} is not implemented")
        if reducer == "count":
            number: float | None = float(len(points))
        else:
            number = functions[reducer](clean) if clean else None
        out.append(Value(value.labels, number=number))
    return out


_THRESHOLDS: dict[str, Callable[[float, list[float]], bool]] = {
    "gt": lambda x, p: x > p[0],
    "lt": lambda x, p: x < p[0],
    "gte": lambda x, p: x >= p[0],
    "lte": lambda x, p: x <= p[0],
    "eq": lambda x, p: x == p[0],
    "ne": lambda x, p: x != p[0],
    "within_range": lambda x, p: min(p) < x < max(p),
    "outside_range": lambda x, p: x < min(p) or x > max(p),
    "within_range_included": lambda x, p: min(p) <= x <= max(p),
    "outside_range_included": lambda x, p: x <= min(p) or x >= max(p),
}


def _threshold(values: list[Value], model: Mapping[str, Any]) -> list[Value]:
    conditions = model.get("conditions") or []
    if not conditions:
        raise RuleError("a threshold expression without conditions")
    evaluator = conditions[0].get("evaluator", {})
    kind = str(evaluator.get("type", "gt"))
    params = [float(p) for p in evaluator.get("params", [])]
    test = _THRESHOLDS.get(kind)
    if test is None or not params:
        raise RuleError(f"threshold type {kind!r} is not implemented (or has no parameters)")
    out = []
    for value in values:
        if value.series is not None:
            raise RuleError("a threshold needs numbers; reduce the series first")
        x = value.number
        out.append(Value(value.labels, number=None if x is None or math.isnan(x) else float(test(x, params))))
    return out


_BINARY: dict[type[ast.AST], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda a, b: a / b if b else math.nan,
    ast.Mod: lambda a, b: a % b if b else math.nan,
    ast.Pow: operator.pow,
}
_COMPARE: dict[type[ast.AST], Callable[[float, float], bool]] = {
    ast.Gt: operator.gt,
    ast.Lt: operator.lt,
    ast.GtE: operator.ge,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _math(expression: str, steps: Mapping[str, list[Value]]) -> list[Value]:
    """``$A > 5 && $B < 3``: per label set, with numbers broadcast to every label set."""
    refs = sorted(set(re.findall(r"\$\{?([A-Za-z][A-Za-z0-9_]*)\}?", expression)))
    python = re.sub(r"\$\{?([A-Za-z][A-Za-z0-9_]*)\}?", r"__ref_\1", expression)
    python = python.replace("&&", " and ").replace("||", " or ").replace("!=", "__NE__").replace("!", " not ")
    python = python.replace("__NE__", "!=")
    try:
        tree = ast.parse(python, mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"math expression {expression!r}: {exc.msg}") from exc
    for ref in refs:
        if ref not in steps:
            raise RuleError(
                f"math expression {expression!r} refers to ${ref}, which comes later or does not exist"
            )
    label_sets: list[Labels] = []
    for ref in refs:
        for value in steps[ref]:
            if value.labels not in label_sets:
                label_sets.append(value.labels)
    label_sets = label_sets or [()]

    def lookup(ref: str, labels: Labels) -> float | None:
        values = steps[ref]
        for value in values:
            if value.labels == labels or not value.labels:
                return value.number
        if len(values) == 1:
            return values[0].number
        return None

    def evaluate(node: ast.AST, labels: Labels) -> float | None:
        if isinstance(node, ast.Expression):
            return evaluate(node.body, labels)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id.startswith("__ref_"):
            return lookup(node.id[len("__ref_") :], labels)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
            inner = evaluate(node.operand, labels)
            if inner is None:
                return None
            return -inner if isinstance(node.op, ast.USub) else float(not inner)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            a, b = evaluate(node.left, labels), evaluate(node.right, labels)
            return None if a is None or b is None else _BINARY[type(node.op)](a, b)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            a, b = evaluate(node.left, labels), evaluate(node.comparators[0], labels)
            return None if a is None or b is None else float(_COMPARE[type(node.ops[0])](a, b))
        if isinstance(node, ast.BoolOp):
            parts = [evaluate(v, labels) for v in node.values]
            if any(p is None for p in parts):
                return None
            truth = all(parts) if isinstance(node.op, ast.And) else any(parts)
            return float(truth)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "abs"
            and len(node.args) == 1
        ):
            inner = evaluate(node.args[0], labels)
            return None if inner is None else abs(inner)
        raise RuleError(f"math expression {expression!r}: {ast.dump(node)[:60]} is not supported")

    return [Value(labels, number=evaluate(tree, labels)) for labels in label_sets]


# --- evaluation ----------------------------------------------------------------------------


@dataclass
class Evaluation:
    """One evaluation of one rule at one time: the condition's value per label set."""

    at: dt.datetime
    conditions: dict[Labels, float | None] = field(default_factory=dict)
    steps: dict[str, list[Value]] = field(default_factory=dict)
    no_data: bool = False
    error: str = ""


def evaluate_once(store: Store, rule: Rule, at: dt.datetime) -> Evaluation:
    evaluation = Evaluation(at)
    try:
        for query in rule.queries:
            if query.datasource_uid != DATASOURCE_UID:
                raise RuleError(
                    f"query {query.ref_id} uses datasource {query.datasource_uid!r}, not {DATASOURCE_UID}"
                )
            span = TimeRange(
                at - dt.timedelta(seconds=query.range_from),
                at - dt.timedelta(seconds=query.range_to),
                query.interval_ms,
            )
            sql = render_query(query.sql, span, dashboard=False)
            evaluation.steps[query.ref_id] = frame_values(run_sql(store, sql, query.ref_id))
        for model in rule.expressions:
            kind = str(model.get("type", ""))
            ref_id = str(model["refId"])
            source = str(model.get("expression", "")).strip().lstrip("$")
            if kind == "reduce":
                evaluation.steps[ref_id] = _reduce(evaluation.steps[source], model)
            elif kind == "threshold":
                evaluation.steps[ref_id] = _threshold(evaluation.steps[source], model)
            elif kind == "math":
                evaluation.steps[ref_id] = _math(str(model.get("expression", "")), evaluation.steps)
            else:
                raise RuleError(
                    f"expression type {kind!r} ({ref_id}) is not implemented; use reduce, threshold or math"
                )
        condition = evaluation.steps.get(rule.condition)
        if condition is None:
            raise RuleError(f"condition {rule.condition!r} is not a step of the rule")
        evaluation.no_data = all(not evaluation.steps[q.ref_id] for q in rule.queries)
        evaluation.conditions = {v.labels: v.number for v in condition}
    except (RuleError, MacroError, KeyError) as exc:
        evaluation.error = str(exc)
    except Exception as exc:  # the engine's message (bad SQL, missing table) is what to report
        evaluation.error = f"{type(exc).__name__}: {exc}"
    return evaluation


def _values_for(evaluation: Evaluation, labels: Labels) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for ref_id, step in evaluation.steps.items():
        for value in step:
            if value.labels == labels or (not value.labels and len(step) == 1):
                values[ref_id] = value.number
    return values


def _previous_times(rule: Rule, at: dt.datetime) -> list[dt.datetime]:
    steps = math.ceil(rule.pending / rule.interval) if rule.interval else 0
    return [at - dt.timedelta(seconds=rule.interval * k) for k in range(1, steps + 1)]


def evaluate(store: Store, rule: Rule, at: dt.datetime) -> list[Instance]:
    """The rule's alert instances at ``at`` that are not normal: firing, pending, no data, error."""
    evaluation = evaluate_once(store, rule, at)
    if evaluation.error:
        state = {"OK": "normal", "Alerting": "firing", "KeepLast": "normal"}.get(rule.exec_err_state, "error")
        if state == "normal":
            return []
        return [Instance(rule, {}, None, {}, state, at, at, evaluation.error)]
    if evaluation.no_data:
        state = {"OK": "normal", "Alerting": "firing", "KeepLast": "normal"}.get(rule.no_data_state, "nodata")
        return [] if state == "normal" else [Instance(rule, {}, None, {}, state, at, at)]
    active = {labels for labels, value in evaluation.conditions.items() if value}
    since = dict.fromkeys(active, at)
    holding = set(active)
    for earlier in _previous_times(rule, at):
        if not holding:
            break
        past = evaluate_once(store, rule, earlier)
        still = {labels for labels, value in past.conditions.items() if value} if not past.error else set()
        for labels in holding & still:
            since[labels] = earlier
        holding &= still
    instances = []
    for labels in sorted(active):
        values = _values_for(evaluation, labels)
        shown = {k: v for k, v in values.items() if k != rule.condition}
        value = next(iter(shown.values()), None) if len(shown) == 1 else shown.get(_value_step(rule))
        state = "firing" if labels in holding or rule.pending == 0 else "pending"
        instances.append(Instance(rule, dict(labels), value, values, state, at, since[labels]))
    return instances


def _value_step(rule: Rule) -> str:
    """The step whose number is shown as the instance's value: what the condition judges."""
    for model in rule.expressions:
        if str(model["refId"]) == rule.condition:
            return str(model.get("expression", "")).strip().lstrip("$")
    return rule.condition


def check(
    store: Store,
    rules: Sequence[Rule],
    now: dt.datetime,
    since: dt.datetime | None = None,
) -> list[Instance]:
    """Every rule at ``now`` or, with ``since``, at every evaluation interval from ``since`` to
    ``now`` (each label set once: its latest state, firing preferred)."""
    found: dict[tuple[str, Labels], Instance] = {}
    for rule in rules:
        times = [now]
        if since is not None:
            step = dt.timedelta(seconds=rule.interval or 60)
            t = now - step
            while t >= since:
                times.append(t)
                t -= step
        for at in reversed(times):
            for instance in evaluate(store, rule, at):
                key = (rule.uid, _labels(instance.labels))
                kept = found.get(key)
                if kept is None or instance.state == "firing" or kept.state != "firing":
                    if kept is not None and kept.active_since and instance.active_since:
                        instance.active_since = min(kept.active_since, instance.active_since)
                    found[key] = instance
    return sorted(found.values(), key=lambda i: (i.rule.uid, sorted(i.labels.items())))


# --- annotations and webhooks --------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def humanize(value: float | None) -> str:
    """Grafana's ``humanize``: a number with an SI prefix, four significant digits."""
    if value is None or math.isnan(value):
        return "NaN"
    magnitude = abs(value)
    for size, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{value / size:.4g}{prefix}"
    return f"{value:.4g}"


def render_template(text: str, labels: Mapping[str, str], values: Mapping[str, float | None]) -> str:
    """The parts of Grafana's annotation templates usagelog's rules use: ``$labels.x``,
    ``$values.B.Value`` (and ``$value``), ``humanize``; anything else is left as written."""

    def resolve(expr: str) -> str | None:
        parts = expr.split()
        fn = None
        if len(parts) == 2 and parts[0] == "humanize":
            fn, expr = parts[0], parts[1]
        elif len(parts) != 1:
            return None
        value: Any
        if expr.startswith("$labels."):
            value = labels.get(expr[len("$labels.") :], "")
        elif expr.startswith("$values.") and expr.endswith(".Value"):
            value = values.get(expr[len("$values.") : -len(".Value")])
        elif expr == "$value":
            value = next((v for v in values.values() if v is not None), None)
        else:
            return None
        if fn == "humanize":
            return humanize(None if value is None or value == "" else float(value))
        if isinstance(value, float):
            return humanize(value)
        return "" if value is None else str(value)

    def substitute(match: re.Match[str]) -> str:
        resolved = resolve(match.group(1))
        return match.group(0) if resolved is None else resolved

    return _TEMPLATE.sub(substitute, text)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _label_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


def webhook_payload(instances: Sequence[Instance], receiver: str = "usagelog") -> dict[str, Any]:
    """The firing instances as Grafana's webhook contact point posts them (Alertmanager's shape
    plus Grafana's ``title``, ``state``, ``message`` and per-alert ``values``)."""
    firing = [i for i in instances if i.state == "firing"]
    alerts = []
    for instance in firing:
        labels = {
            "alertname": instance.rule.title,
            "grafana_folder": instance.rule.folder,
            "rule_uid": instance.rule.uid,
            **instance.rule.labels,
            **instance.labels,
        }
        annotations = {
            key: render_template(text, instance.labels, instance.values)
            for key, text in instance.rule.annotations.items()
        }
        fingerprint = hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]
        alerts.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": _iso(instance.active_since or instance.at),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
                "values": {k: v for k, v in instance.values.items() if v is not None},
                "valueString": " ".join(
                    f"[ var='{k}' labels={{{_label_text(instance.labels)}}} value={v} ]"
                    for k, v in instance.values.items()
                ),
            }
        )
    label_sets = [set(labels.items()) for labels in (a["labels"] for a in alerts) if isinstance(labels, dict)]
    common = set.intersection(*label_sets) if label_sets else set()
    return {
        "receiver": receiver,
        "status": "firing" if alerts else "resolved",
        "orgId": 1,
        "alerts": alerts,
        "groupLabels": {},
        "commonLabels": dict(sorted(common)),
        "commonAnnotations": {},
        "externalURL": "",
        "version": "1",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "title": f"[FIRING:{len(alerts)}] usagelog",
        "state": "alerting" if alerts else "ok",
        "message": "\n".join(i.summary for i in firing),
    }


def post_webhook(url: str, payload: Mapping[str, Any], timeout: float = 10.0) -> int:
    """POST the payload as JSON; returns the HTTP status (raises ``OSError`` when unreachable)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "usagelog-alerts"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)


def resolve_time(text: str | None, now: dt.datetime) -> dt.datetime:
    return parse_time(text, now) if text else now
