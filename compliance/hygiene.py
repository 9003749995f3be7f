"""List hygiene that runs on a schedule: the sunset sweep and the reputation guard."""

import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import DateTimeField, Max, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from compliance.models import (
    ConsentStatus,
    EspEvent,
    EspEventKind,
    SenderPause,
    SendLog,
    SendOutcome,
    SunsetEntry,
    Suppression,
    SuppressionReason,
)
from compliance.services import suppress
from compliance.signals import sender_paused, sunset_entered
from segments.models import Contact, Event, EventType

log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENGAGEMENT_EVENTS = [EventType.EMAIL_OPENED, EventType.EMAIL_CLICKED]


def _with_last_engagement(contacts: QuerySet) -> QuerySet:
    """Annotate `engaged_at`: the latest open, click, purchase or email subscription."""
    last_event = (Event.objects.filter(contact=OuterRef("pk"), type__in=ENGAGEMENT_EVENTS)
                  .order_by("-occurred_at").values("occurred_at")[:1])
    last_esp = (EspEvent.objects.filter(recipient=OuterRef("email"), kind__in=[EspEventKind.OPENED,
                                                                              EspEventKind.CLICKED])
                .order_by("-occurred_at").values("occurred_at")[:1])
    epoch = Value(EPOCH, output_field=DateTimeField())
    return contacts.annotate(
        subscribed_at=Max("consents__changed_at", filter=Q(consents__channel="email")),
        last_event=Subquery(last_event), last_esp=Subquery(last_esp),
    ).annotate(engaged_at=Greatest(Coalesce("subscribed_at", epoch), Coalesce("last_event", epoch),
                                   Coalesce("last_esp", epoch), Coalesce("last_order_at", epoch)))


def sunset_candidates(at: datetime | None = None) -> QuerySet:
    """Email subscribers with no engagement for SUNSET_DAYS (the sunset segment's definition)."""
    at = at or timezone.now()
    cutoff = at - timedelta(days=settings.COMPLIANCE["SUNSET_DAYS"])
    subscribed = Contact.objects.filter(consents__channel="email", consents__status=ConsentStatus.SUBSCRIBED)
    return _with_last_engagement(subscribed).filter(engaged_at__lt=cutoff)


@transaction.atomic
def sunset_sweep(at: datetime | None = None) -> dict:
    """1. new candidates enter the segment; 2. those who engaged since leave it (and a sunset
    suppression is lifted); 3. those still silent after the grace period are suppressed."""
    at = at or timezone.now()
    grace = timedelta(days=settings.COMPLIANCE["SUNSET_GRACE_DAYS"])
    entered = list(sunset_candidates(at).filter(sunset__isnull=True).values_list("pk", flat=True))
    SunsetEntry.objects.bulk_create([SunsetEntry(contact_id=pk, entered_at=at) for pk in entered],
                                    ignore_conflicts=True)
    exited = suppressed = 0
    entries = SunsetEntry.objects.select_related("contact")
    engaged = dict(_with_last_engagement(Contact.objects.filter(sunset__isnull=False)).values_list("pk", "engaged_at"))
    for entry in entries:
        last = engaged.get(entry.contact_id)
        since = entry.suppressed_at or entry.entered_at
        if last and last > since:
            Suppression.objects.active().filter(contact=entry.contact, reason=SuppressionReason.SUNSET).update(
                lifted_at=at, lifted_by="engaged again")
            entry.delete()
            exited += 1
        elif entry.suppressed_at is None and entry.entered_at <= at - grace and entry.contact.email:
            suppress(channel="email", address=entry.contact.email, reason=SuppressionReason.SUNSET,
                     contact=entry.contact, detail="no engagement after the re-engagement period", at=at)
            entry.suppressed_at, entry.last_engaged_at = at, last
            entry.save(update_fields=["suppressed_at", "last_engaged_at"])
            suppressed += 1
    if entered:
        transaction.on_commit(lambda: sunset_entered.send(sender=SunsetEntry, contact_ids=entered))
    return {"entered": len(entered), "exited": exited, "suppressed": suppressed}


def reputation_rates(at: datetime | None = None, channel: str = "email") -> dict:
    at = at or timezone.now()
    since = at - timedelta(days=settings.COMPLIANCE["REPUTATION_WINDOW_DAYS"])
    sends = SendLog.objects.filter(channel=channel, outcome=SendOutcome.SENT, at__gt=since, at__lte=at).count()
    events = EspEvent.objects.filter(occurred_at__gt=since, occurred_at__lte=at)
    bounces = events.filter(kind__in=[EspEventKind.HARD_BOUNCE, EspEventKind.INVALID]).count()
    complaints = events.filter(kind=EspEventKind.COMPLAINT).count()
    return {"sends": sends, "bounces": bounces, "complaints": complaints,
            "bounce_rate": bounces / sends if sends else 0.0, "complaint_rate": complaints / sends if sends else 0.0}


def reputation_check(at: datetime | None = None) -> SenderPause | None:
    """Pause marketing email when the bounce or complaint rate crosses its limit (and tell staff)."""
    cfg = settings.COMPLIANCE
    rates = reputation_rates(at)
    active = SenderPause.objects.filter(channel="email", resumed_at__isnull=True).first()
    if active or rates["sends"] < cfg["REPUTATION_MIN_SENDS"]:
        return active
    problems = []
    if rates["bounce_rate"] > cfg["BOUNCE_RATE_LIMIT"]:
        problems.append(f"bounce rate {rates['bounce_rate']:.2%} > {cfg['BOUNCE_RATE_LIMIT']:.2%}")
    if rates["complaint_rate"] > cfg["COMPLAINT_RATE_LIMIT"]:
        problems.append(f"complaint rate {rates['complaint_rate']:.2%} > {cfg['COMPLAINT_RATE_LIMIT']:.2%}")
    if not problems:
        return None
    pause = SenderPause.objects.create(channel="email", reason="; ".join(problems), sends=rates["sends"],
                                       bounce_rate=rates["bounce_rate"], complaint_rate=rates["complaint_rate"],
                                       paused_at=at or timezone.now())
    log.warning("marketing email paused: %s", pause.reason)
    mail_admins("Marketing email paused", f"Marketing email was paused: {pause.reason}. "
                "Resume it in the admin (Compliance > Sender pauses) once the cause is fixed.", fail_silently=True)
    transaction.on_commit(lambda: sender_paused.send(sender=SenderPause, pause=pause))
    return pause


def sender_resume(*, pause: SenderPause, by: str) -> None:
    SenderPause.objects.filter(pk=pause.pk, resumed_at__isnull=True).update(resumed_at=timezone.now(),
                                                                             resumed_by=by[:150])
