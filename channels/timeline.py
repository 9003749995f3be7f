"""Messages on the contact's timeline (registered with segments.timeline)."""

from django.urls import reverse
from django.utils.translation import gettext as _

from segments.timeline import Entry, register


@register
def _messages(contact, limit: int) -> list[Entry]:
    rows = (contact.messages.order_by("-created_at")
            .values("id", "channel", "status", "created_at", "sent_at", "template__name", "gate_reason")[:limit])
    return [
        Entry(at=r["sent_at"] or r["created_at"], kind="message", kind_label=_("message"),
              title=f"{r['channel']}: {r['template__name'] or '—'}",
              detail=f"{r['status']}" + (f" ({r['gate_reason']})" if r["gate_reason"] and r["status"] != "sent" else ""),
              url=reverse("admin:channels_message_change", args=[r["id"]]))
        for r in rows
    ]
