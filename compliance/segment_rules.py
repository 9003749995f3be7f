"""The "consent" condition for segment rules, registered with segments' rule registry.

{"kind": "consent", "channel": "email", "state": "subscribed"} — the contact's current consent on a
channel (never_asked, pending, subscribed, unsubscribed). SQL and Python read the same Consent row;
no row means never asked.
"""

from django.db.models import Exists, OuterRef, Q

from compliance.models import Consent, ConsentStatus
from compliance.services import CHANNELS, consent_status
from segments.rules import ConditionKind, RuleError, register


def validate(params: dict) -> dict:
    unknown = set(params) - {"kind", "channel", "state"}
    if unknown:
        raise RuleError(f"consent: unknown parameter(s) {', '.join(sorted(unknown))}")
    channel, state = params.get("channel"), params.get("state", ConsentStatus.SUBSCRIBED)
    if channel not in CHANNELS:
        raise RuleError(f"consent: channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if state not in ConsentStatus.values:
        raise RuleError(f"consent: state must be one of {', '.join(ConsentStatus.values)}, not {state!r}")
    return {"kind": "consent", "channel": channel, "state": state}


def to_q(params: dict, ctx) -> Q:
    rows = Consent.objects.filter(contact=OuterRef("pk"), channel=params["channel"])
    if params["state"] == ConsentStatus.NEVER_ASKED:
        return ~Exists(rows) | Exists(rows.filter(status=ConsentStatus.NEVER_ASKED))
    return Q(Exists(rows.filter(status=params["state"])))


def matches(params: dict, facts) -> bool:
    status = facts.cached(("consent", params["channel"]), lambda: consent_status(facts.contact, params["channel"]))
    return status == params["state"]


def register_kind() -> None:
    register(ConditionKind(
        name="consent", label="Consent per channel", validate=validate, to_q=to_q, matches=matches,
        depends=lambda params: {"consent"},
        help='{"kind": "consent", "channel": "email", "state": "subscribed"} (never_asked, pending, '
             "subscribed, unsubscribed)"), replace=True)
