"""A small IAM policy evaluator: enough of the AWS evaluation logic to test our identity policy.

It answers "do these identity policies allow this request?" the way IAM does for the identity-based
policies of one principal (its inline and attached policies): an explicit Deny in any of them wins,
otherwise any matching Allow allows, otherwise the implicit deny. Actions and resources (and
NotResource, which matches every resource it does not list) match with `*`/`?` wildcards (actions case-insensitively),
condition keys case-insensitively, and a missing key fails every operator except `Null` and
the `...IfExists` forms. Operators it does not know raise, so a new operator in the policy
makes the tests fail instead of passing silently.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ContextValue = str | Sequence[str]


@dataclass(frozen=True)
class Request:
    """One API call as IAM sees it: action, the resource ARN it authorizes, condition context."""

    action: str
    resource: str
    context: Mapping[str, ContextValue] = field(default_factory=dict)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _wildcard(pattern: str, value: str, *, case_sensitive: bool) -> bool:
    regex = fnmatch.translate(pattern)  # `*` and `?` as IAM uses them; `[` never appears in ARNs here
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.fullmatch(regex, value, flags) is not None


def _string_equals(expected: str, actual: str) -> bool:
    return expected == actual


def _string_like(expected: str, actual: str) -> bool:
    return _wildcard(expected, actual, case_sensitive=True)


def _bool(expected: str, actual: str) -> bool:
    return str(expected).lower() == str(actual).lower()


_OPERATORS = {
    "StringEquals": _string_equals,
    "StringLike": _string_like,
    "ArnEquals": _string_equals,
    "ArnLike": _string_like,
    "Bool": _bool,
}


def _lookup(context: Mapping[str, ContextValue], key: str) -> list[str] | None:
    for name, value in context.items():
        if name.lower() == key.lower():
            return [str(item) for item in _as_list(value)]
    return None


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, ContextValue]) -> bool:
    expected_values = [str(item) for item in _as_list(expected)]
    actual = _lookup(context, key)
    if operator == "Null":
        wants_missing = expected_values[0].lower() == "true"
        return (actual is None) == wants_missing
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    qualifier, _, base = base.rpartition(":")
    compare = _OPERATORS.get(base)
    if compare is None:
        raise NotImplementedError(f"condition operator {operator!r} is not modelled")
    if actual is None:
        return if_exists or qualifier == "ForAllValues"
    if qualifier == "ForAllValues":
        return all(any(compare(e, a) for e in expected_values) for a in actual)
    # Single-valued keys and ForAnyValue: any context value matching any expected value.
    return any(compare(e, a) for e in expected_values for a in actual)


def _statement_matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "NotAction" in statement or "Principal" in statement:
        raise NotImplementedError("NotAction/Principal are not modelled")
    actions = _as_list(statement["Action"])
    if not any(_wildcard(pattern, request.action, case_sensitive=False) for pattern in actions):
        return False
    excluded = "NotResource" in statement
    patterns = _as_list(statement["NotResource" if excluded else "Resource"])
    listed = any(_wildcard(pattern, request.resource, case_sensitive=True) for pattern in patterns)
    if listed == excluded:  # a Resource that is not listed, or a NotResource that is
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        for key, expected in conditions.items():
            if not _condition_holds(operator, key, expected, request.context):
                return False
    return True


def matching_statements(policy: Mapping[str, Any], request: Request) -> list[Mapping[str, Any]]:
    """The statements of `policy` that apply to `request` (for messages)."""
    return [s for s in _as_list(policy["Statement"]) if _statement_matches(s, request)]


def is_allowed(policies: Mapping[str, Any] | Sequence[Mapping[str, Any]], request: Request) -> bool:
    """True when the identity policy, or the list of one principal's identity policies, allows the request."""
    documents = [policies] if isinstance(policies, Mapping) else list(policies)
    statements = [s for document in documents for s in matching_statements(document, request)]
    if any(s["Effect"] == "Deny" for s in statements):
        return False
    return any(s["Effect"] == "Allow" for s in statements)


def allowed_actions(policy: Mapping[str, Any]) -> set[str]:
    """Every action an Allow statement names (wildcards kept as written)."""
    return {
        action
        for statement in _as_list(policy["Statement"])
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
    }
