"""Rule trees: nested {"all": [...]}, {"any": [...]}, {"not": {...}} groups over leaf conditions."""

import operator
from functools import reduce

from django.db.models import Q

from segments.rules.registry import Context, Facts, RuleError, get_kind

MAX_DEPTH = 12
GROUPS = ("all", "any", "not")


def _group_of(node) -> str | None:
    if not isinstance(node, dict):
        raise RuleError("must be an object such as {\"all\": [...]} or {\"kind\": ...}")
    keys = [k for k in GROUPS if k in node]
    if len(keys) > 1 or (keys and len(node) != 1):
        raise RuleError(f"a group has exactly one key (all, any or not), got {sorted(node)}")
    return keys[0] if keys else None


def validate(node, *, path: str = "rules", depth: int = 0) -> dict:
    """Return the cleaned tree or raise RuleError naming the path of the first problem."""
    if depth > MAX_DEPTH:
        raise RuleError(f"{path}: nested more than {MAX_DEPTH} levels deep")
    try:
        group = _group_of(node)
    except RuleError as e:
        raise RuleError(f"{path}: {e}") from None
    if group == "not":
        return {"not": validate(node["not"], path=f"{path}.not", depth=depth + 1)}
    if group:
        children = node[group]
        if not isinstance(children, list) or not children:
            raise RuleError(f"{path}.{group}: needs a non-empty list of conditions")
        return {group: [validate(c, path=f"{path}.{group}[{i}]", depth=depth + 1) for i, c in enumerate(children)]}
    if "kind" not in node:
        raise RuleError(f"{path}: a condition needs a \"kind\"")
    params = {k: v for k, v in node.items() if k != "kind"}
    try:
        kind = get_kind(node["kind"])
        return {"kind": kind.name, **kind.validate(params)}
    except RuleError as e:
        raise RuleError(f"{path} ({node['kind']}): {e}") from None


def to_q(node: dict, ctx: Context) -> Q:
    group = _group_of(node)
    if group == "not":
        return ~to_q(node["not"], ctx)
    if group:
        children = node[group]
        if ctx.only is not None:  # a few contacts, one by one: the cheap tests first, so they decide alone
            children = sorted(children, key=_cost)
        qs = [to_q(c, ctx) for c in children]
        combined = qs[0]
        for q in qs[1:]:
            combined = (combined & q) if group == "all" else (combined | q)
        return combined
    params = {k: v for k, v in node.items() if k != "kind"}
    return get_kind(node["kind"]).to_q(params, ctx)


# Leaf kinds answered from the contact row alone; "tag" is one index probe; the others read events or orders.
_ROW_KINDS = {"field", "property", "last_order"}


def _cost(node: dict) -> int:
    """A rough rank of what testing one contact costs: 0 its own row, 1 one index probe, 2 more."""
    group = _group_of(node)
    if group == "not":
        return _cost(node["not"])
    if group:
        return max(_cost(c) for c in node[group])
    if node.get("kind") in _ROW_KINDS or (node.get("kind") == "orders" and not node.get("days")):
        return 0
    return 1 if node.get("kind") == "tag" else 2


def matches(node: dict, facts: Facts) -> bool:
    group = _group_of(node)
    if group == "not":
        return not matches(node["not"], facts)
    if group == "all":
        return all(matches(c, facts) for c in node["all"])
    if group == "any":
        return any(matches(c, facts) for c in node["any"])
    params = {k: v for k, v in node.items() if k != "kind"}
    return bool(get_kind(node["kind"]).matches(params, facts))


def depends(node: dict) -> set[str]:
    group = _group_of(node)
    if group == "not":
        return depends(node["not"])
    if group:
        return set().union(*(depends(c) for c in node[group]))
    params = {k: v for k, v in node.items() if k != "kind"}
    return set(get_kind(node["kind"]).depends(params))


# Which way the new events of a filter can move a rule's answer (see event_effects).
EITHER, TRUER, FALSER = 0, 1, -1


def event_effects(node: dict) -> list[tuple[Q, int]]:
    """(filter on Event rows, direction) for each kind of new event that can change this rule's answer.

    The direction says what such events can do to the answer: TRUER, only turn it true (more events can
    only raise "viewed 3+ times"), so a contact already in the segment cannot leave because of them;
    FALSER, only turn it false; EITHER when unsure. A NOT flips it; "all" and "any" keep it, being monotone.
    An incremental refresh then re-checks only non-members (TRUER), only members (FALSER), or both.
    """
    group = _group_of(node)
    if group == "not":
        return [(q, -direction) for q, direction in event_effects(node["not"])]
    if group:
        return [effect for c in node[group] for effect in event_effects(c)]
    params = {k: v for k, v in node.items() if k != "kind"}
    kind = get_kind(node["kind"])
    if kind.event_effects is not None:
        return kind.event_effects(params)
    if kind.new_events is not None:
        return [(kind.new_events(params), EITHER)]
    tokens = kind.depends(params)
    if "*" in tokens:
        return [(Q(), EITHER)]
    types = sorted(t[6:] for t in tokens if t.startswith("event:"))
    return [(Q(type__in=types), EITHER)] if types else []


def new_events(node: dict) -> Q | None:
    """A filter on Event rows: the new events that can change this rule's answer; None if no event can."""
    found = [q for q, _direction in event_effects(node)]
    return reduce(operator.or_, found) if found else None


def leaves(node: dict):
    group = _group_of(node)
    if group == "not":
        yield from leaves(node["not"])
    elif group:
        for c in node[group]:
            yield from leaves(c)
    else:
        yield node
