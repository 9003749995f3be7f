"""Segment rules: a tree of conditions compiled to ONE SQL query, or evaluated in Python for one contact.

A rule tree is JSON: {"all": [...]}, {"any": [...]}, {"not": {...}} or a leaf {"kind": name, **params}.
Each leaf kind is registered here with four functions: validation of its params, a Q/Exists builder over
segments.Contact, a Python evaluator for one contact (trigger checks) that must agree with the SQL, and the
change tokens it depends on (so incremental refreshes only re-run segments a change can affect).

The segments app registers: field, property, tag, event_count, did_not_since, orders, last_order, bought,
discount, engagement, score, rank, segment (see segments/rules/kinds*.py; the admin lists them with examples).

How a higher app registers a kind (compliance registers "consent" this way)::

    # compliance/apps.py
    class ComplianceConfig(AppConfig):
        def ready(self):
            from segments.rules import ConditionKind, RuleError, register
            from compliance.segment_rules import consent_validate, consent_q, consent_matches
            register(ConditionKind(
                name="consent", label="Consent per channel",
                validate=consent_validate,     # (params: dict) -> dict, raise RuleError("clear message")
                to_q=consent_q,                # (params, ctx: Context) -> Q over Contact; never NULL
                                               #   (wrap nullable SQL in segments.rules.sql.safe)
                matches=consent_matches,       # (params, facts: Facts) -> bool; facts.contact, facts.ctx.now,
                                               #   facts.cached(key, loader) for per-contact loads
                depends=lambda params: {"consent"},
                help='{"kind": "consent", "channel": "email", "state": "subscribed"}',
            ))

    # and after a consent change, so memberships move at once:
    from segments.membership import segment_refresh_for_contacts
    segment_refresh_for_contacts(contact_ids=[...], changed={"consent"})

`register(kind, replace=False)` refuses a second kind of the same name; `unregister(name)` removes one (tests).
"""

from segments.rules import kinds, kinds_commerce, kinds_scores  # noqa: E402,F401,I001  (register the built-in kinds)
from segments.rules.registry import (
    ConditionKind,
    Context,
    Facts,
    RuleError,
    all_kinds,
    get_kind,
    register,
    unregister,
)
from segments.rules.tree import (
    EITHER,
    FALSER,
    TRUER,
    depends,
    event_effects,
    leaves,
    matches,
    new_events,
    to_q,
    validate,
)

__all__ = [
    "EITHER", "FALSER", "TRUER", "ConditionKind", "Context", "Facts", "RuleError", "all_kinds", "check_cycles",
    "depends", "event_effects", "get_kind",
    "leaves", "matches", "new_events", "register", "to_q", "unregister", "validate",
]


def check_cycles(rules: dict, *, segment_id: int | None) -> None:
    """Refuse a rule whose segment references lead back to itself (A uses B uses A)."""
    from segments.models import Segment

    def walk(node: dict, trail: tuple[int, ...]) -> None:
        for ref in kinds_scores.segment_refs(node):
            if ref in trail:
                names = dict(Segment.objects.filter(pk__in=[*trail, ref]).values_list("pk", "name"))
                chain = " -> ".join(names.get(i, "this segment") for i in (*trail, ref))
                raise RuleError(f"segments refer to each other in a cycle: {chain}")
            walk(Segment.objects.filter(pk=ref).values_list("rules", flat=True).first() or {}, (*trail, ref))

    walk(rules, (segment_id,) if segment_id else ())
