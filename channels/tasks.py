"""django-q2 entry points: thin, idempotent, ids in and counts out."""

from django.utils import timezone

from channels.models import Message, MessageStatus
from channels.services import _claimer_dead, messages_enqueue, messages_reconcile, messages_send


def send_batch(message_ids: list[int]) -> dict:
    return messages_send(message_ids)


def send_due() -> int:
    """Every minute: deferred messages whose time has come, claims left by dead workers, and
    `unknown` email the provider can tell about (channels.services.messages_reconcile)."""
    now = timezone.now()
    due = list(Message.objects.filter(status=MessageStatus.DEFERRED, defer_until__lte=now)
               .order_by("pk").values_list("pk", flat=True)[:20_000])
    held = (Message.objects.filter(status__in=[MessageStatus.CLAIMED, MessageStatus.SENDING])
            .values_list("pk", "claim", "claimed_at")[:20_000])
    orphans = [pk for pk, claim, claimed_at in held if _claimer_dead(claim, claimed_at, now)]
    again = messages_reconcile()  # `unknown` email the provider says it never took
    messages_enqueue(due + orphans + again)
    return len(due) + len(orphans) + len(again)
