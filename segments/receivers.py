"""Signal receivers that keep segment membership current (connected in SegmentsConfig.ready)."""

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from segments.incremental import on_events_ingested, segment_refresh_for_contacts
from segments.models import Contact, Order
from segments.signals import events_ingested

events_ingested.connect(on_events_ingested, dispatch_uid="segments.membership.on_events_ingested")


@receiver([post_save, post_delete], sender=Order, dispatch_uid="segments.order_changed")
def _order_changed(sender, instance: Order, **kwargs) -> None:
    """An order saved one at a time (admin, webhook): figures first, then the segments, after commit.

    Bulk writers (imports) send no signals: they call contact_stats_refresh and
    segment_refresh_for_contacts(changed={"orders"}) themselves.
    """
    if instance.contact_id:
        contact_id = instance.contact_id

        def refresh() -> None:
            from segments.services import contact_stats_refresh

            contact_stats_refresh(contact_ids=[contact_id])
            segment_refresh_for_contacts(contact_ids=[contact_id], changed={"orders"})

        transaction.on_commit(refresh)


@receiver(post_save, sender=Contact, dispatch_uid="segments.contact_changed")
def _contact_changed(sender, instance: Contact, **kwargs) -> None:
    pk = instance.pk
    transaction.on_commit(lambda: segment_refresh_for_contacts(contact_ids=[pk], changed={"contact"}))


@receiver(m2m_changed, sender=Contact.tags.through, dispatch_uid="segments.tags_changed")
def _tags_changed(sender, instance, action: str, reverse: bool, pk_set, **kwargs) -> None:
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    ids = list(pk_set or []) if reverse else [instance.pk]
    if reverse and action == "post_clear":
        return  # a tag cleared of all contacts: the scheduled full refresh catches it
    transaction.on_commit(lambda: segment_refresh_for_contacts(contact_ids=ids, changed={"tags"}))
