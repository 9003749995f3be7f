import re

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from segments.models.contacts import Contact


class EventType(models.TextChoices):
    """The documented vocabulary. Custom types are allowed too (see validate_event_type)."""

    PRODUCT_VIEWED = "product_viewed", _("product viewed")
    CATEGORY_VIEWED = "category_viewed", _("category viewed")
    SEARCHED = "searched", _("searched")
    CART_UPDATED = "cart_updated", _("cart updated")
    CHECKOUT_STARTED = "checkout_started", _("checkout started")
    ORDER_PLACED = "order_placed", _("order placed")
    ORDER_FULFILLED = "order_fulfilled", _("order fulfilled")
    ORDER_DELIVERED = "order_delivered", _("order delivered")
    ORDER_REFUNDED = "order_refunded", _("order refunded")
    WISHLIST_ADDED = "wishlist_added", _("wishlist added")
    BACK_IN_STOCK_REQUESTED = "back_in_stock_requested", _("back in stock requested")
    # Written by the channels and segments apps; workflows and the sunset rule read them.
    EMAIL_SENT = "email_sent", _("email sent")
    EMAIL_OPENED = "email_opened", _("email opened")
    EMAIL_CLICKED = "email_clicked", _("email clicked")
    SEGMENT_ENTERED = "segment_entered", _("segment entered")
    SEGMENT_EXITED = "segment_exited", _("segment exited")


EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")


def validate_event_type(value: str) -> None:
    if not EVENT_TYPE_RE.match(value or ""):
        raise ValidationError(
            _("%(value)r is not a valid event type: use lower-case letters, digits and _ . : - (max 64)."),
            params={"value": value},
        )


class Event(models.Model):
    """Something a person did (or the shop did for them), at a point in time."""

    # No index of its own: event_contact_type_time_idx starts with contact_id and serves every lookup
    # by contact; a second one only cost each insert another random B-tree write (B2: ~12 µs/row on SQLite).
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, null=True, blank=True, db_index=False,
                                related_name="events", verbose_name=_("contact"))
    anonymous_id = models.CharField(_("anonymous id"), max_length=64, blank=True,
                                    help_text=_("Visitor id from the storefront cookie, merged into a contact later."))
    type = models.CharField(_("type"), max_length=64, validators=[validate_event_type])
    properties = models.JSONField(_("properties"), default=dict, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), default=timezone.now)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    source = models.CharField(_("source"), max_length=32, default="api")
    idempotency_key = models.CharField(_("idempotency key"), max_length=128, blank=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        constraints = [
            models.UniqueConstraint(fields=["source", "idempotency_key"], condition=~Q(idempotency_key=""),
                                    name="event_idempotency_unique_per_source"),
        ]
        indexes = [
            # "events of type T for contact C since time X": every segment and trigger asks this.
            models.Index(fields=["contact", "type", "occurred_at"], name="event_contact_type_time_idx"),
            # "who did T since X" (segment rebuilds) and the admin's type filter.
            models.Index(fields=["type", "occurred_at"], name="event_type_time_idx"),
            # "Received in the last 24 hours" (dashboard). On arrival time, not occurred_at: a new event's
            # received_at is the largest yet, so each insert appends to this index, where an occurred_at
            # index took a write at a random place per event (shops send late and out of order; B2 cycles
            # through one hour of occurred_at: 12.6k against 9.3k events/s at 700k rows, one SQLite
            # writer). The admin list orders by id, which is the order of arrival, and needs no index.
            models.Index(fields=["received_at"], name="event_received_idx"),
            # Merging a visitor's anonymous history when they identify.
            models.Index(fields=["anonymous_id"], condition=~Q(anonymous_id=""), name="event_anonymous_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} @ {self.occurred_at:%Y-%m-%d %H:%M}"
