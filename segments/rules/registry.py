"""The registry of condition kinds. See the `segments.rules` docstring for how to add one."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone


class RuleError(ValueError):
    """A rule the admin must refuse; the message says where and why, in the shop owner's words."""


class Context:
    """What one evaluation shares between SQL and Python: the clock and computed constants.

    Both sides read `now` and the cached constants (a spend threshold, a category's subtree) from
    the same Context, so "within 7 days" or "top 10%" mean the same row set in SQL and in Python.
    """

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or timezone.now()
        self._cache: dict[Any, Any] = {}
        self.stack: tuple[int, ...] = ()  # segments being inlined, to stop a cycle at run time too
        # Set by incremental refreshes: the only contacts asked about, so uncorrelated subqueries
        # (GROUP BY ... HAVING) can be cut to them instead of aggregating over every contact.
        self.only: list[int] | None = None

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


class Facts:
    """One contact's data for Python evaluation, loaded lazily, one query per kind of fact."""

    def __init__(self, contact, ctx: Context) -> None:
        self.contact = contact
        self.ctx = ctx
        self._cache: dict[Any, Any] = {}

    def cached(self, key: Any, load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]


@dataclass(frozen=True)
class ConditionKind:
    """One kind of leaf condition: {"kind": name, **params}.

    validate(params) -> cleaned params, or raise RuleError.
    to_q(params, ctx) -> a Q over segments.Contact (no per-contact Python; Exists/subqueries welcome).
        It must never be NULL for a contact (wrap nullable SQL in a CASE), or NOT would disagree with Python.
    matches(params, facts) -> bool for one contact; must agree with to_q.
    depends(params) -> change tokens that can alter the answer: "contact", "tags", "orders", "scores",
        "event:<type>", or a token of your own (e.g. "consent"); "*" means any change.
    new_events(params) -> optional Q over segments.Event: which newly stored events can alter the answer
        (incremental refreshes re-check only their contacts). Default: the types of its "event:<type>" tokens.
        Narrower is faster ("product_viewed where category = Kitchen"), but it must not leave one out.
    event_effects(params) -> optional [(Q over segments.Event, direction)]: new_events split by what the
        events can do to the answer: segments.rules.tree.TRUER (only make it true, e.g. a count >= n),
        FALSER (only make it false) or EITHER. Default: new_events (or the event types), EITHER. A wrong
        TRUER/FALSER leaves memberships wrong; when unsure, say EITHER.
    """

    name: str
    label: str
    validate: Callable[[dict], dict]
    to_q: Callable[[dict, Context], Q]
    matches: Callable[[dict, Facts], bool]
    depends: Callable[[dict], set[str]] = field(default=lambda params: {"*"})
    help: str = ""
    new_events: Callable[[dict], Q] | None = None
    event_effects: Callable[[dict], list[tuple[Q, int]]] | None = None


_kinds: dict[str, ConditionKind] = {}


def register(kind: ConditionKind, *, replace: bool = False) -> ConditionKind:
    if kind.name in _kinds and not replace and _kinds[kind.name] is not kind:
        raise ValueError(f"condition kind {kind.name!r} is already registered")
    _kinds[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _kinds.pop(name, None)


def get_kind(name: str) -> ConditionKind:
    try:
        return _kinds[name]
    except KeyError:
        raise RuleError(f"unknown condition kind {name!r}; known kinds: {', '.join(sorted(_kinds))}") from None


def all_kinds() -> list[ConditionKind]:
    return [_kinds[n] for n in sorted(_kinds)]
