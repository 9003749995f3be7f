"""The one gate every message in the system passes: may this contact get this message now?

Every send path (campaigns, workflow steps, double opt-in mail, SMS and push) does exactly this,
and nothing else decides whether a message may go::

    from compliance import gate

    decision = gate.can_send(contact=c, channel="email", purpose="marketing", topic="promotions")
    if not decision.allowed:
        gate.record_refused(decision, message_key="campaign:42")   # deferred if .defer_until is set
        return                                                     # (re-queue for .defer_until)
    ...hand the message to the provider...
    gate.record_sent(contact=c, channel="email", purpose="marketing", topic="promotions",
                     message_key="campaign:42")

- ``can_send(*, contact, channel, purpose, topic=None, at=None) -> Decision`` only reads. A
  Decision has ``.allowed`` (bool), ``.reason`` (one of ``Reason``, machine-readable) and
  ``.defer_until`` (aware datetime or None; set for quiet hours and frequency caps: try again
  then, do not drop the message).
- ``record_sent(*, contact, channel, purpose, topic=None, at=None, message_key) -> SendLog`` is
  called after each delivery is handed to the provider. Frequency caps and the reputation guard
  count these rows. It is idempotent per (contact, channel, message_key), so a retried task may
  call it twice.
- ``can_send_many(*, contacts, channel, purpose, topic=None, at=None)`` and
  ``gate_facts(*, contacts, channel, at=None)`` (pass ``facts=`` to can_send) give the same answers
  for a whole batch with one query per kind of fact; ``record_sent_many`` is its cheap writer.
- ``record_refused(decision, *, message_key) -> SendLog`` records a refusal or deferral, so the
  owner can see in the admin (Compliance › Send log) why a message did not go.

Where to see every send in one place: the Compliance › Send log admin lists every row written
by record_sent/record_refused, and ``grep -rn "gate.can_send" --include=*.py .`` lists every
caller; tests/compliance/test_gate_is_the_only_way.py fails when a module outside this gate
calls a mail/SMS/push provider without calling can_send. ``python manage.py can_send <email or
phone> <channel> [--purpose ...]`` prints the answer for one person. As a last line of defence,
compliance/guard.py drops suppressed recipients from to/cc/bcc in anymail's pre_send signal (set
``message.metadata["purpose"] = "transactional"`` on transactional mail; anything else is treated
as marketing).

Order of checks for marketing (the first that fails is the reason): an address for the channel;
suppression (hard bounce, invalid, complaint, erased, fake/role, repeated soft bounces); consent
(no consent, pending confirmation, unsubscribed); sunset; topic; the shop's postal address and
sender identity for email (CAN-SPAM); a reputation pause; frequency caps (global and the person's
own preference); quiet hours (defer). Transactional messages are refused only for a missing,
invalid or hard-bounced address.
"""

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from functools import cached_property
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.models import (
    BLOCKS_TRANSACTIONAL,
    Consent,
    ConsentStatus,
    Frequency,
    Preference,
    Purpose,
    SenderPause,
    SendLog,
    SendOutcome,
    Suppression,
    SuppressionReason,
    Topic,
)
from compliance.services import PUSH_REASONS, _hash_for, contact_address
from segments.dbwrite import insert_ignoring_conflicts
from segments.middleware import current_shop
from segments.models import Contact

CHANNELS = ("email", "sms", "push")
_DEFAULT_TOPICS = frozenset(Topic.values)  # a contact without a Preference row: every topic
_PURPOSES = frozenset(Purpose.values)  # (Choices.values builds a list on every access)


class Reason(StrEnum):
    ALLOWED = "allowed"
    NO_ADDRESS = "no_address"
    INVALID = "suppressed_invalid"
    HARD_BOUNCE = "suppressed_hard_bounce"
    COMPLAINT = "suppressed_complaint"
    ERASED = "suppressed_erased"
    SOFT_BOUNCES = "suppressed_soft_bounces"
    SUSPECT = "suppressed_suspect_address"
    MANUAL = "suppressed_manual"
    NO_CONSENT = "no_consent"
    PENDING = "pending_confirmation"
    UNSUBSCRIBED = "unsubscribed"
    SUNSET = "sunset"
    TOPIC = "topic_opted_out"
    SENDER_IDENTITY = "sender_identity_missing"
    SENDER_PAUSED = "sender_paused"
    FREQUENCY_CAP = "frequency_cap"
    QUIET_HOURS = "quiet_hours"


# Most serious first: the reason shown is the one that would still hold after the others cleared.
SUPPRESSION_ORDER = [
    (SuppressionReason.INVALID, Reason.INVALID),
    (SuppressionReason.HARD_BOUNCE, Reason.HARD_BOUNCE),
    (SuppressionReason.COMPLAINT, Reason.COMPLAINT),
    (SuppressionReason.ERASED, Reason.ERASED),
    (SuppressionReason.MANUAL, Reason.MANUAL),
    (SuppressionReason.SUSPECT, Reason.SUSPECT),
    (SuppressionReason.SOFT_BOUNCES, Reason.SOFT_BOUNCES),
]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    defer_until: datetime | None = None
    contact_id: int | None = None
    channel: str = ""
    purpose: str = ""
    topic: str | None = None
    at: datetime | None = None

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def deferred(self) -> bool:
        return self.defer_until is not None


class GateFacts:
    """What the gate reads about a set of contacts on one channel, one query per kind of fact.

    `can_send` builds one for a single contact; a sender deciding for a batch builds one for
    the whole batch (`can_send_many`), so the rules below run unchanged on prefetched facts.
    `note_sent` adds a send made during the batch, so the frequency cap sees it at once.
    """

    CAP_HORIZON = timedelta(days=30)  # the longest cap window (monthly preference)

    def __init__(self, contacts: list[Contact], channel: str, at: datetime):
        self.contacts = {c.pk: c for c in contacts}
        self.channel, self.at = channel, at
        self._extra_sends: dict[int, list[datetime]] = {}

    @cached_property
    def _suppressions(self) -> dict[int, set[str]]:
        hashes = {pk: _hash_for(c, self.channel) for pk, c in self.contacts.items()}
        key_channel = "sms" if self.channel == "sms" else "email"
        by_hash: dict[str, set[str]] = {}
        wanted = {h for h in hashes.values() if h}
        if wanted:
            for h, reason in (Suppression.objects.active().filter(channel=key_channel, address_hash__in=wanted)
                              .values_list("address_hash", "reason")):
                by_hash.setdefault(h, set()).add(reason)
        result = {}
        for pk, h in hashes.items():
            reasons = by_hash.get(h, set()) if h else set()
            result[pk] = reasons & PUSH_REASONS if self.channel == "push" else reasons
        return result

    @cached_property
    def _consents(self) -> dict[int, str]:
        return dict(Consent.objects.filter(contact_id__in=list(self.contacts), channel=self.channel)
                    .values_list("contact_id", "status"))

    @cached_property
    def _preferences(self) -> dict[int, Preference]:
        return {p.contact_id: p for p in Preference.objects.filter(contact_id__in=list(self.contacts))}

    @cached_property
    def paused(self) -> bool:
        return SenderPause.objects.filter(channel=self.channel, resumed_at__isnull=True).exists()

    @cached_property
    def _sends(self) -> dict[int, list[datetime]]:
        sends: dict[int, list[datetime]] = {}
        for pk, t in (SendLog.objects.filter(contact_id__in=list(self.contacts), channel=self.channel,
                                             purpose=Purpose.MARKETING, outcome=SendOutcome.SENT,
                                             at__gt=self.at - self.CAP_HORIZON, at__lte=self.at)
                      .order_by("at").values_list("contact_id", "at")):
            sends.setdefault(pk, []).append(t)
        return sends

    def suppressions(self, contact: Contact) -> set[str]:
        return self._suppressions.get(contact.pk, set())

    def consent(self, contact: Contact) -> str:
        return self._consents.get(contact.pk) or ConsentStatus.NEVER_ASKED

    def preference(self, contact: Contact) -> Preference:
        return self._preferences.get(contact.pk) or Preference(contact=contact, topics=list(Topic.values),
                                                               frequency=Frequency.NEWS)

    def topics_and_frequency(self, contact: Contact) -> tuple:
        """The person's topics and frequency (the defaults without a Preference row), without
        building a default Preference per contact."""
        preference = self._preferences.get(contact.pk)
        if preference is None:
            return _DEFAULT_TOPICS, Frequency.NEWS
        return preference.topics, preference.frequency

    def sent_times(self, contact: Contact) -> list[datetime]:
        return sorted(self._sends.get(contact.pk, []) + self._extra_sends.get(contact.pk, []))

    def note_sent(self, contact: Contact, at: datetime) -> None:
        self._extra_sends.setdefault(contact.pk, []).append(at)


def can_send(*, contact: Contact, channel: str, purpose: str, topic: str | None = None,
             at: datetime | None = None, facts: GateFacts | None = None) -> Decision:
    """Allow or refuse one message; reads only. See the module docstring for the order of checks."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r} (use one of {CHANNELS})")
    if purpose not in _PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r} (use marketing or transactional)")
    at = at or (facts.at if facts else timezone.now())
    facts = facts if facts is not None and facts.channel == channel else GateFacts([contact], channel, at)

    def decide(reason: str, defer_until: datetime | None = None) -> Decision:
        return Decision(allowed=reason == Reason.ALLOWED, reason=str(reason), defer_until=defer_until,
                        contact_id=contact.pk, channel=channel, purpose=purpose, topic=topic, at=at)

    if channel != "push" and not contact_address(contact, channel):
        return decide(Reason.NO_ADDRESS)
    suppressions = facts.suppressions(contact)
    if purpose == Purpose.TRANSACTIONAL:
        blocking = [r for s, r in SUPPRESSION_ORDER if s in suppressions and s in BLOCKS_TRANSACTIONAL]
        return decide(blocking[0] if blocking else Reason.ALLOWED)
    for suppression, reason in SUPPRESSION_ORDER:
        if suppression in suppressions:
            return decide(reason)
    status = facts.consent(contact)
    if status != ConsentStatus.SUBSCRIBED:
        return decide({ConsentStatus.PENDING: Reason.PENDING,
                       ConsentStatus.UNSUBSCRIBED: Reason.UNSUBSCRIBED}.get(status, Reason.NO_CONSENT))
    if SuppressionReason.SUNSET in suppressions:
        return decide(Reason.SUNSET)
    topics, frequency = facts.topics_and_frequency(contact)
    if topic and topic not in topics:
        return decide(Reason.TOPIC)
    if channel == "email" and not sender_identity_ready():
        return decide(Reason.SENDER_IDENTITY)
    if facts.paused:
        return decide(Reason.SENDER_PAUSED)
    cap_until = _frequency_cap_until(facts.sent_times(contact), channel, frequency, at)
    if cap_until:
        return decide(Reason.FREQUENCY_CAP, cap_until)
    quiet_until = _quiet_hours_until(contact, channel, at)
    if quiet_until:
        return decide(Reason.QUIET_HOURS, quiet_until)
    return decide(Reason.ALLOWED)


def gate_facts(*, contacts: list[Contact], channel: str, at: datetime | None = None) -> GateFacts:
    """Facts for a batch: pass as can_send(..., facts=...) for each of its messages."""
    return GateFacts(contacts, channel, at or timezone.now())


def can_send_many(*, contacts: list[Contact], channel: str, purpose: str, topic: str | None = None,
                  at: datetime | None = None) -> list[Decision]:
    """can_send for many contacts with a handful of queries in all; the same answers, in order."""
    facts = gate_facts(contacts=contacts, channel=channel, at=at)
    return [can_send(contact=c, channel=channel, purpose=purpose, topic=topic, at=facts.at, facts=facts)
            for c in contacts]


def sender_identity_ready() -> bool:
    """CAN-SPAM: no marketing email before the shop's postal address and sender are configured."""
    shop = current_shop()
    return bool(shop.postal_address.strip() and shop.sender_name.strip() and shop.sender_email.strip())


def _frequency_cap_until(sent_times: list[datetime], channel: str, frequency: str, at: datetime) -> datetime | None:
    caps = settings.COMPLIANCE["CAPS"].get(channel, {})
    windows = [(timedelta(days=1), caps.get("day")), (timedelta(days=7), caps.get("week"))]
    if frequency == Frequency.WEEKLY:
        windows.append((timedelta(days=7), 1))
    elif frequency == Frequency.MONTHLY:
        windows.append((timedelta(days=30), 1))
    sent = [t for t in sent_times if at - GateFacts.CAP_HORIZON < t <= at]
    until = None
    for window, cap in windows:
        if cap is None or cap <= 0:
            continue
        in_window = [t for t in sent if t > at - window]
        if len(in_window) >= cap:
            # Free again when enough of these sends have left the window.
            candidate = in_window[len(in_window) - cap] + window
            until = max(until, candidate) if until else candidate
    return until


def _parse_window(spec: str) -> tuple[time, time] | None:
    if not spec or "-" not in spec:
        return None
    start, end = (time.fromisoformat(part.strip()) for part in spec.split("-", 1))
    return start, end


def contact_zone(contact: Contact) -> ZoneInfo:
    try:
        return ZoneInfo(contact.timezone) if contact.timezone else current_shop().zone
    except (ValueError, KeyError):
        return current_shop().zone


def _quiet_hours_until(contact: Contact, channel: str, at: datetime) -> datetime | None:
    window = _parse_window(settings.COMPLIANCE["SEND_WINDOWS"].get(channel, ""))
    if window is None:
        return None
    start, end = window
    zone = contact_zone(contact)
    local = at.astimezone(zone)
    now_t = local.time()
    inside = (start <= now_t < end) if start < end else (now_t >= start or now_t < end)
    if inside:
        return None
    day = local.date() if now_t < start else local.date() + timedelta(days=1)
    return datetime.combine(day, start, tzinfo=zone)


def record_sent(*, contact: Contact, channel: str, purpose: str, topic: str | None = None,
                at: datetime | None = None, message_key: str) -> SendLog:
    """Record a delivery handed to the provider (idempotent per contact, channel and message_key)."""
    fields = {"contact": contact, "channel": channel, "message_key": message_key[:200], "outcome": SendOutcome.SENT}
    existing = SendLog.objects.filter(**fields).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return SendLog.objects.create(**fields, purpose=purpose, topic=topic or "", reason=Reason.ALLOWED,
                                          at=at or timezone.now())
    except IntegrityError:
        return SendLog.objects.get(**fields)


def record_sent_many(*, contact_ids_and_keys: list[tuple[int, str]], channel: str, purpose: str,
                     topic: str | None = None, at: datetime | None = None) -> None:
    """record_sent for a batch sender: one INSERT that skips rows already recorded (idempotent)."""
    at = at or timezone.now()
    insert_ignoring_conflicts(
        SendLog, ("contact", "channel", "purpose", "topic", "message_key", "outcome", "reason", "at"),
        [(cid, channel, purpose, topic or "", key[:200], SendOutcome.SENT, Reason.ALLOWED, at)
         for cid, key in contact_ids_and_keys])


def record_refused(decision: Decision, *, message_key: str) -> SendLog:
    """Record why a message did not go (or was deferred) so the owner can look it up."""
    return SendLog.objects.create(
        contact_id=decision.contact_id, channel=decision.channel, purpose=decision.purpose,
        topic=decision.topic or "", message_key=message_key[:200],
        outcome=SendOutcome.DEFERRED if decision.defer_until else SendOutcome.REFUSED,
        reason=decision.reason, at=decision.at or timezone.now())
