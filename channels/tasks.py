"""django-q2 entry points: thin, idempotent, ids in and counts out."""

from django.db.models import Q
from django.utils import timezone

from channels.models import Message, MessageStatus
from channels.services import _stale_before, messages_enqueue, messages_send


def send_batch(message_ids: list[int]) -> dict:
    return messages_send(message_ids)


def send_due() -> int:
    """Every minute: deferred messages whose time has come, and claims left by dead workers."""
    now = timezone.now()
    ids = list(Message.objects.filter(
        Q(status=MessageStatus.DEFERRED, defer_until__lte=now)
        | Q(status__in=[MessageStatus.CLAIMED, MessageStatus.SENDING], claimed_at__lt=_stale_before(now))
    ).order_by("pk").values_list("pk", flat=True)[:20_000])
    messages_enqueue(ids)
    return len(ids)
