"""The audience and the shop's data: who the contacts are and what they did.

Split by subject; import from `segments.models` as usual.
"""

from segments.models.catalog import Category, Product
from segments.models.contacts import Contact, ContactIdentifier, Tag
from segments.models.events import Event, EventType
from segments.models.ingest import ApiKey, ImportJob, InventoryItem, WebhookDelivery  # noqa: F401 (ingestion)
from segments.models.orders import Order, OrderLine, OrderStatus
from segments.models.segments import ClvFit, ContactScore, Segment, SegmentMembership  # noqa: F401
from segments.models.shop import Shop

__all__ = [
    "Category", "Contact", "ContactIdentifier", "Event", "EventType", "Order", "OrderLine",
    "OrderStatus", "Product", "Shop", "Tag",
]
