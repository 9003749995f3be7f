"""Provider events move a message along its lifecycle; opens and clicks become contact events."""

from django.dispatch import receiver
from django.utils import timezone

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


def _find(event) -> Message | None:
    message_id = (event.metadata or {}).get("message_id")
    if message_id and str(message_id).isdigit():
        return Message.objects.filter(pk=int(message_id)).select_related("template").first()
    if event.message_id:
        return Message.objects.filter(provider_message_id=event.message_id).select_related("template").first()
    return None


def on_tracking(sender, event, esp_name, **kwargs) -> None:
    status = ANYMAIL_STATUS.get(event.event_type)
    if status is None:
        return
    message = _find(event)
    if message is not None:
        message_advance(message, status, at=event.timestamp, url=event.click_url or "")


def connect() -> None:
    from anymail.signals import tracking

    receiver(tracking, dispatch_uid="channels.on_tracking")(on_tracking)
