"""Monitor rules (``USAGELOG_MONITOR``): user, route and path globs flag events as monitored."""

from __future__ import annotations

import pytest

from usagelog.instrumentation.monitor import MonitorRules, validate_rules


def test_no_rules_never_monitor() -> None:
    rules = MonitorRules([])
    assert not rules.active
    assert not rules.matches("alice", "/admin/<id>", "/admin/1")
    assert not rules.matches("", "", "")


def test_user_rule_matches_exact_user_and_globs() -> None:
    rules = MonitorRules(["user:alice", "user:svc-*"])
    assert rules.active
    assert rules.matches("alice", "/x", "/x")
    assert rules.matches("svc-billing", "/x", "/x")
    assert not rules.matches("alice2", "/x", "/x")
    assert not rules.matches("bob", "/x", "/x")


def test_user_rule_never_matches_an_anonymous_request() -> None:
    """``user:*`` flags every identified user, not the requests without one."""
    rules = MonitorRules(["user:*"])
    assert rules.matches("anyone", "/x", "/x")
    assert not rules.matches("", "/x", "/x")


def test_route_rule_matches_the_route_template_not_the_path() -> None:
    rules = MonitorRules(["route:/users/<int:id>"])
    assert rules.matches("", "/users/<int:id>", "/users/7")
    assert not rules.matches("", "/users/<int:id>/posts", "/users/<int:id>")


def test_route_glob_star_crosses_slashes() -> None:
    rules = MonitorRules(["route:/admin/*"])
    assert rules.matches("", "/admin/users", "/whatever")
    assert rules.matches("", "/admin/users/<id>/roles", "/whatever")
    assert not rules.matches("", "/administrator", "/admin/x")


def test_route_rule_never_matches_an_unrouted_request() -> None:
    """A 404 has no route; ``route:*`` must not flag it."""
    rules = MonitorRules(["route:*"])
    assert not rules.matches("", "", "/nope")
    assert rules.matches("", "/r", "/r")


def test_path_rule_matches_the_concrete_path() -> None:
    rules = MonitorRules(["path:/debug/*", "path:/items/?"])
    assert rules.matches("", "", "/debug/trace")
    assert rules.matches("", "/items/<id>", "/items/5")
    assert not rules.matches("", "/items/<id>", "/items/55")
    assert not rules.matches("", "/debug", "/debug")


def test_character_class_globs() -> None:
    rules = MonitorRules(["user:team[ab]-*"])
    assert rules.matches("teama-1", "", "/")
    assert rules.matches("teamb-2", "", "/")
    assert not rules.matches("teamc-3", "", "/")


def test_globs_are_case_sensitive_and_anchored() -> None:
    rules = MonitorRules(["user:Alice", "path:/api"])
    assert rules.matches("Alice", "", "/other")
    assert not rules.matches("alice", "", "/other")
    assert not rules.matches("xAlice", "", "/other")
    assert not rules.matches("", "", "/api/v1")
    assert not rules.matches("", "", "/API")


def test_any_rule_matching_is_enough() -> None:
    rules = MonitorRules(["user:alice", "route:/admin/*", "path:/debug"])
    assert rules.matches("alice", "/public", "/public")
    assert rules.matches("bob", "/admin/x", "/admin/x")
    assert rules.matches("bob", "/public", "/debug")
    assert not rules.matches("bob", "/public", "/public")


def test_glob_metacharacters_of_regex_are_literal() -> None:
    rules = MonitorRules(["path:/a.b+(c)"])
    assert rules.matches("", "", "/a.b+(c)")
    assert not rules.matches("", "", "/axb+(c)")


@pytest.mark.parametrize("bad", ["alice", "user:", "ip:10.0.0.1", ":x", "User:alice", ""])
def test_validate_rejects_malformed_rules_naming_them(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_rules(["user:ok", bad])
    assert repr(bad) in str(info.value)


def test_constructor_validates_rules() -> None:
    with pytest.raises(ValueError, match="method:GET"):
        MonitorRules(["method:GET"])


def test_validate_accepts_each_kind() -> None:
    validate_rules(["user:a", "route:/r/*", "path:/p", "path:*:*"])
