"""ESP tracking events (anymail's normalised events) -> suppression and engagement.

anymail's `bounced` also covers soft bounces for some ESPs (SES Transient, Postmark SoftBounce,
SendGrid `type: blocked`), and Postmark reports a receiving spam filter's block
(SpamNotification) as `complained`. So hard/soft and complaint are decided from the raw ESP event,
per ESP, below. Events are stored once per (ESP, event key): a replayed webhook or a batch the
ESP re-sends after a failure changes nothing the second time. Unknown or malformed events are
logged and stored as `unknown`; they never raise (anymail would answer 500 and the ESP retry).
A webhook never creates a contact: suppression is keyed on the address itself.
"""

import hashlib
import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.addresses import address_hash, normalize_email
from compliance.models import ConsentSource, EspEvent, EspEventKind, SuppressionReason
from compliance.services import suppress, unsubscribe, unsubscribe_all
from segments.models import Contact

log = logging.getLogger(__name__)

POSTMARK_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
POSTMARK_COMPLAINT = {"SpamComplaint"}


def _get(obj, *path, default=None):
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
    return default if obj is None else obj


def _bounce_kind(esp: str, raw, reject_reason: str | None) -> str:
    if esp == "Amazon SES":
        bounce_type = _get(raw, "bounce", "bounceType", default="")
        return EspEventKind.HARD_BOUNCE if bounce_type == "Permanent" else EspEventKind.SOFT_BOUNCE
    if esp == "Postmark":
        if _get(raw, "RecordType") == "SubscriptionChange":
            reason = _get(raw, "SuppressionReason", default="")
            return EspEventKind.HARD_BOUNCE if reason == "HardBounce" else EspEventKind.SOFT_BOUNCE
        return EspEventKind.HARD_BOUNCE if _get(raw, "Type") in POSTMARK_HARD else EspEventKind.SOFT_BOUNCE
    if esp == "Mailgun":
        severity = _get(raw, "event-data", "severity", default="") or _get(raw, "severity", default="")
        return EspEventKind.HARD_BOUNCE if severity == "permanent" else EspEventKind.SOFT_BOUNCE
    if esp == "SendGrid":
        return EspEventKind.SOFT_BOUNCE if _get(raw, "type") == "blocked" else EspEventKind.HARD_BOUNCE
    # Other ESPs: only an explicit "invalid" is trusted as permanent; the soft-bounce limit catches the rest.
    return EspEventKind.HARD_BOUNCE if reject_reason == "invalid" else EspEventKind.SOFT_BOUNCE


def classify(esp: str, event_type: str, reject_reason: str | None, raw) -> str:
    if event_type == "bounced":
        return _bounce_kind(esp, raw, reject_reason)
    if event_type == "rejected":
        return {"invalid": EspEventKind.INVALID, "bounced": EspEventKind.HARD_BOUNCE,
                "spam": EspEventKind.COMPLAINT, "unsubscribed": EspEventKind.UNSUBSCRIBED}.get(
            reject_reason or "", EspEventKind.OTHER)
    if event_type == "complained":
        if esp == "Postmark" and _get(raw, "Type") not in POSTMARK_COMPLAINT:
            return EspEventKind.SOFT_BOUNCE  # SpamNotification: a filter blocked it; not the person
        return EspEventKind.COMPLAINT
    return {"unsubscribed": EspEventKind.UNSUBSCRIBED, "subscribed": EspEventKind.SUBSCRIBED,
            "deferred": EspEventKind.DEFERRED, "delivered": EspEventKind.DELIVERED,
            "opened": EspEventKind.OPENED, "clicked": EspEventKind.CLICKED,
            "queued": EspEventKind.OTHER, "sent": EspEventKind.OTHER, "failed": EspEventKind.OTHER,
            "autoresponded": EspEventKind.OTHER}.get(event_type, EspEventKind.UNKNOWN)


def _raw_json(raw) -> dict | list:
    if hasattr(raw, "lists"):  # a QueryDict (form-encoded ESPs)
        raw = {k: v if len(v) > 1 else v[0] for k, v in raw.lists()}
    try:
        return json.loads(json.dumps(raw, default=str))
    except (TypeError, ValueError):
        return {"unserialisable": repr(raw)[:2000]}


def _event_key(esp: str, event, recipient: str, raw) -> str:
    if esp == "Mailgun" and event.event_id:
        # anymail's Mailgun event_id is the signature token, and the signature does not cover the
        # event body: a token seen once must never be accepted again, whatever event it carries.
        return f"token:{event.event_id}"[:200]
    base = event.event_id or hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()
    return f"{base}:{event.event_type}:{recipient}"[:200]


def tracking_event_record(*, event, esp_name: str) -> EspEvent | None:
    """Store one anymail tracking event and act on it. Returns None for a replay."""
    esp = str(esp_name or "unknown")[:40]
    raw = _raw_json(getattr(event, "esp_event", None))
    event_type = str(getattr(event, "event_type", "") or "unknown")
    recipient = normalize_email(str(getattr(event, "recipient", "") or ""))[:254]
    kind = classify(esp, event_type, getattr(event, "reject_reason", None), raw)
    if kind == EspEventKind.UNKNOWN:
        log.warning("unknown %s tracking event %r (kept, no action)", esp, event_type)
    occurred_at = getattr(event, "timestamp", None) or timezone.now()
    try:
        with transaction.atomic():
            row = EspEvent.objects.create(
                esp=esp, event_key=_event_key(esp, event, recipient, raw), event_type=event_type[:20], kind=kind,
                recipient=recipient, recipient_hash=address_hash("email", recipient) if recipient else "",
                description=str(getattr(event, "description", "") or "")[:2000], raw=raw, occurred_at=occurred_at)
            if recipient:
                _apply(row)
    except IntegrityError:
        log.info("replayed %s event ignored", esp)
        return None
    return row


def _apply(row: EspEvent) -> None:
    contact = Contact.objects.filter(email=row.recipient).first()
    detail = f"{row.esp} {row.event_type}: {row.description}"[:255]
    if row.kind == EspEventKind.HARD_BOUNCE:
        suppress(channel="email", address=row.recipient, reason=SuppressionReason.HARD_BOUNCE, contact=contact,
                 detail=detail, at=row.occurred_at)
    elif row.kind == EspEventKind.INVALID:
        suppress(channel="email", address=row.recipient, reason=SuppressionReason.INVALID, contact=contact,
                 detail=detail, at=row.occurred_at)
    elif row.kind == EspEventKind.SOFT_BOUNCE:
        _count_soft_bounces(row, contact, detail)
    elif row.kind == EspEventKind.COMPLAINT:
        suppress(channel="email", address=row.recipient, reason=SuppressionReason.COMPLAINT, contact=contact,
                 detail=detail, at=row.occurred_at)
        if contact:
            unsubscribe_all(contact=contact, source=ConsentSource.ESP_EVENT, actor=row.esp,
                            note="spam complaint", proof={"esp_event_id": row.pk})
    elif row.kind == EspEventKind.UNSUBSCRIBED and contact:
        unsubscribe(contact=contact, channel="email", source=ConsentSource.ESP_EVENT, actor=row.esp,
                    proof={"esp_event_id": row.pk})
    # SUBSCRIBED (an ESP-side reactivation) is stored only: it never lifts our suppression.


def _count_soft_bounces(row: EspEvent, contact: Contact | None, detail: str) -> None:
    window = timedelta(days=settings.COMPLIANCE["SOFT_BOUNCE_WINDOW_DAYS"])
    count = EspEvent.objects.filter(recipient_hash=row.recipient_hash, kind=EspEventKind.SOFT_BOUNCE,
                                    occurred_at__gt=row.occurred_at - window,
                                    occurred_at__lte=row.occurred_at).count()
    if count >= settings.COMPLIANCE["SOFT_BOUNCE_LIMIT"]:
        suppress(channel="email", address=row.recipient, reason=SuppressionReason.SOFT_BOUNCES, contact=contact,
                 detail=f"{count} soft bounces; last: {detail}"[:255], at=row.occurred_at)
