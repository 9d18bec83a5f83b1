"""Monitored events (``USAGELOG_MONITOR``): rules that flag events for debugging access.

Rules are comma-separated ``user:<glob>``, ``route:<glob>`` or ``path:<glob>`` (shell-style
wildcards, case-sensitive); an event matching any rule is ``monitored=true``.
Example: ``user:alice,route:/admin/*``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

RULE_KINDS = ("user", "route", "path")


def validate_rules(rules: Sequence[str]) -> None:
    for rule in rules:
        kind, sep, pattern = rule.partition(":")
        if not sep or kind not in RULE_KINDS or not pattern:
            raise ValueError(f"bad monitor rule {rule!r} (expected user:<glob>, route:<glob> or path:<glob>)")


class MonitorRules:
    """Compiled monitor rules; ``matches`` is called once per event, off the request path."""

    def __init__(self, rules: Sequence[str]) -> None:
        validate_rules(rules)
        compiled: dict[str, list[re.Pattern[str]]] = {kind: [] for kind in RULE_KINDS}
        for rule in rules:
            kind, _, pattern = rule.partition(":")
            compiled[kind].append(re.compile(fnmatch.translate(pattern)))
        self._user = tuple(compiled["user"])
        self._route = tuple(compiled["route"])
        self._path = tuple(compiled["path"])
        self.active = bool(rules)

    def matches(self, user_id: str, route: str, path: str) -> bool:
        if not self.active:
            return False
        return (
            (bool(user_id) and any(p.match(user_id) for p in self._user))
            or (bool(route) and any(p.match(route) for p in self._route))
            or any(p.match(path) for p in self._path)
        )
