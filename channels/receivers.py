"""Provider events move a message along its lifecycle; opens and clicks become contact events.

They also settle sends a worker could not record: a message left `sending` or `unknown` (its
worker was killed between the provider's acceptance and the ledger commit) becomes `sent` when
the provider reports having it, and `failed` when it reports refusing it (see
channels.services.message_settle_sent). The benchmark's SMTP sink plays this role for plain
SMTP the way Mailgun does for its SMTP relay: it reports each accepted Message-ID in a Mailgun
"accepted" webhook (bench/smtp_sink.py).
"""

from django.dispatch import receiver
from django.utils import timezone

from channels.ledger import message_settle_sent
from channels.models import FINAL_BAD, STATUS_RANK, Message, MessageStatus
from segments.models import Event
from segments.signals import events_ingested

ANYMAIL_STATUS = {
    "delivered": MessageStatus.DELIVERED, "opened": MessageStatus.OPENED, "clicked": MessageStatus.CLICKED,
    "bounced": MessageStatus.BOUNCED, "rejected": MessageStatus.FAILED, "failed": MessageStatus.FAILED,
    "complained": MessageStatus.COMPLAINED,
}
STAMP = {MessageStatus.DELIVERED: "delivered_at", MessageStatus.OPENED: "opened_at",
         MessageStatus.CLICKED: "clicked_at", MessageStatus.BOUNCED: "failed_at", MessageStatus.FAILED: "failed_at"}


def message_advance(message: Message, status: str, *, at=None, url: str = "") -> bool:
    """Move forward only (a late 'delivered' never hides an 'opened'); record opens/clicks as events."""
    at = at or timezone.now()
    fields = {}
    stamp = STAMP.get(status)
    if stamp and getattr(message, stamp) is None:
        fields[stamp] = at
    current_rank = STATUS_RANK.get(message.status, 99 if message.status in FINAL_BAD else -1)
    if status in FINAL_BAD or STATUS_RANK.get(status, -1) > current_rank:
        fields["status"] = status
    if not fields:
        return False
    Message.objects.filter(pk=message.pk).update(**fields)
    for key, value in fields.items():
        setattr(message, key, value)
    if status in (MessageStatus.OPENED, MessageStatus.CLICKED) and message.contact_id and stamp in fields:
        event = Event.objects.create(
            contact_id=message.contact_id, type="email_opened" if status == MessageStatus.OPENED else "email_clicked",
            occurred_at=at, source="channels", idempotency_key=f"{status}:{message.pk}",
            properties={"message": str(message.pk), "message_id": message.pk,
                        "template": message.template.name if message.template else "",
                        "origin": message.origin, "url": url})
        events_ingested.send(sender=Message, event_ids=[event.pk], trigger_flows=True)
    return True


# The provider has (or had) the message / says it never took it.
PROVIDER_HAS_IT = {"queued", "sent", "delivered", "deferred", "opened", "clicked", "bounced", "complained",
                   "unsubscribed", "autoresponded"}
PROVIDER_REFUSED = {"rejected", "failed"}
UNSETTLED = (MessageStatus.SENDING, MessageStatus.UNKNOWN)


def _find(event) -> Message | None:
    """By the Message id anymail carries in metadata; else by the provider's id when it names one
    message only (an ESP batch shares one id among its recipients)."""
    message_id = (event.metadata or {}).get("message_id")
    if message_id and str(message_id).isdigit():
        return Message.objects.filter(pk=int(message_id)).select_related("template").first()
    if event.message_id:
        # The exclude repeats the partial index's condition: SQLite only uses the index when the query says so.
        found = list(Message.objects.filter(provider_message_id=event.message_id).exclude(provider_message_id="")
                     .select_related("template")[:2])
        return found[0] if len(found) == 1 else None
    return None


def on_tracking(sender, event, esp_name, **kwargs) -> None:
    status = ANYMAIL_STATUS.get(event.event_type)
    if status is None and event.event_type not in PROVIDER_HAS_IT:
        return
    message = _find(event)
    if message is None:
        return
    if message.status in UNSETTLED:
        if event.event_type in PROVIDER_HAS_IT:
            message_settle_sent(message, at=event.timestamp, provider=str(esp_name or "").lower(),
                                provider_message_id=event.message_id or "")
        elif event.event_type in PROVIDER_REFUSED:
            Message.objects.filter(pk=message.pk, status__in=UNSETTLED).update(
                status=MessageStatus.FAILED, failed_at=event.timestamp or timezone.now(),
                error=f"{esp_name}: {event.event_type} {event.description or ''}"[:2000])
            return
    if status is not None:
        message_advance(message, status, at=event.timestamp, url=event.click_url or "")


def connect() -> None:
    from anymail.signals import tracking

    receiver(tracking, dispatch_uid="channels.on_tracking")(on_tracking)
