"""The contact page's single timeline, newest first.

Each app contributes its own entries by registering a source here (segments registers events
and orders; compliance adds consent changes, channels adds messages) so that this lower app
never imports a higher one.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.urls import reverse
from django.utils.translation import gettext as _


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # "event", "order", "message", "consent", ...
    title: str
    detail: str = ""
    url: str = ""
    kind_label: str = ""


Source = Callable[[object, int], list[Entry]]
_sources: list[Source] = []


def register(source: Source) -> Source:
    if source not in _sources:
        _sources.append(source)
    return source


def for_contact(contact, limit: int = 100) -> list[Entry]:
    """Newest `limit` entries over all registered sources; each source is one query."""
    entries: list[Entry] = []
    for source in _sources:
        entries.extend(source(contact, limit))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]


def _describe_event(properties: dict) -> str:
    keys = ("title", "name", "category", "query", "value", "sku", "url")
    parts = [f"{k}: {properties[k]}" for k in keys if isinstance(properties, dict) and properties.get(k) not in (None, "")]
    return ", ".join(parts)[:200]


@register
def _events(contact, limit: int) -> list[Entry]:
    from segments.models import EventType

    labels = dict(EventType.choices)
    rows = contact.events.order_by("-occurred_at").values("id", "type", "occurred_at", "properties")[:limit]
    return [
        Entry(at=r["occurred_at"], kind="event", kind_label=_("event"),
              title=str(labels.get(r["type"], r["type"].replace("_", " "))),
              detail=_describe_event(r["properties"]),
              url=reverse("admin:segments_event_change", args=[r["id"]]))
        for r in rows
    ]


@register
def _orders(contact, limit: int) -> list[Entry]:
    from segments.models import OrderStatus
    from segments.money import format_money

    statuses = dict(OrderStatus.choices)

    rows = contact.orders.order_by("-placed_at").values("id", "name", "external_id", "placed_at", "status",
                                                         "total", "currency")[:limit]
    return [
        Entry(at=r["placed_at"], kind="order", kind_label=_("order"),
              title=_("Order %(name)s") % {"name": r["name"] or r["external_id"]},
              detail=f"{format_money(r['total'], r['currency'])} · {statuses.get(r['status'], r['status'])}",
              url=reverse("admin:segments_order_change", args=[r["id"]]))
        for r in rows
    ]
