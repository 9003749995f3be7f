"""GDPR/CCPA: export everything held about a contact, and erase it.

Erasure deletes the contact and with it every row that names them (consent log, preferences,
events, identifiers, feedback, sunset state), blanks the address on suppression rows and ESP
events, and keeps only what suppression needs: a keyed hash of the address (ICO: put them on a
do-not-contact list rather than forget them) plus an audit entry with no personal data. Orders
stay, detached (Order.contact is SET_NULL), so revenue figures do not change.
"""

from datetime import datetime

from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from compliance.addresses import address_hash
from compliance.models import (
    Consent,
    ConsentEvent,
    ErasureRecord,
    EspEvent,
    SendLog,
    Suppression,
    SuppressionReason,
    UnsubscribeFeedback,
)
from compliance.services import preference_for
from segments.models import Contact


def _iso(value):
    return value.isoformat() if isinstance(value, datetime) else value


def contact_export(contact: Contact) -> dict:
    """Everything held about one person, as plain JSON-ready data (GDPR Art. 15 and 20)."""
    hashes = [h for h in (address_hash("email", contact.email) if contact.email else None,
                          address_hash("sms", contact.phone) if contact.phone else None) if h]
    pref = preference_for(contact)
    orders = contact.orders.prefetch_related("lines").order_by("placed_at")
    return {
        "exported_at": timezone.now().isoformat(),
        "profile": {
            "id": contact.pk, "email": contact.email, "phone": str(contact.phone or ""),
            "first_name": contact.first_name, "last_name": contact.last_name, "locale": contact.locale,
            "timezone": contact.timezone, "country": contact.country, "source": contact.source,
            "properties": contact.properties, "tags": list(contact.tags.values_list("name", flat=True)),
            "created_at": _iso(contact.created_at),
            "identifiers": list(contact.identifiers.values("kind", "source", "value")),
        },
        "consent": [{"channel": c.channel, "status": c.status, "since": _iso(c.changed_at), "source": c.source}
                    for c in Consent.objects.filter(contact=contact)],
        "consent_log": [
            {"channel": e.channel, "from": e.previous_status, "to": e.status, "how": e.source,
             "applied": e.accepted, "note": e.note, "consent_text": e.consent_text,
             "consent_text_sha256": e.consent_text_sha256, "ip": e.ip, "user_agent": e.user_agent,
             "actor": e.actor, "proof": e.proof, "when": _iso(e.occurred_at)}
            for e in ConsentEvent.objects.filter(contact=contact).order_by("occurred_at", "id")],
        "preferences": {"topics": pref.topics, "frequency": pref.frequency},
        "suppressions": [{"channel": s.channel, "reason": s.reason, "detail": s.detail,
                          "since": _iso(s.created_at), "lifted_at": _iso(s.lifted_at)}
                         for s in Suppression.objects.filter(address_hash__in=hashes)],
        "messages": [{"channel": m.channel, "purpose": m.purpose, "topic": m.topic, "message": m.message_key,
                      "outcome": m.outcome, "reason": m.reason, "at": _iso(m.at)}
                     for m in SendLog.objects.filter(contact=contact).order_by("at")],
        "email_events": [{"esp": e.esp, "type": e.event_type, "classified_as": e.kind,
                          "description": e.description, "at": _iso(e.occurred_at)}
                         for e in EspEvent.objects.filter(recipient_hash__in=hashes).order_by("occurred_at")],
        "activity": [{"type": e.type, "properties": e.properties, "at": _iso(e.occurred_at), "source": e.source}
                     for e in contact.events.order_by("occurred_at")],
        "orders": [{"order": o.name or o.external_id, "source": o.source, "placed_at": _iso(o.placed_at),
                    "status": o.status, "currency": o.currency, "total": str(o.total),
                    "lines": [{"title": ln.title, "sku": ln.sku, "quantity": ln.quantity, "total": str(ln.total)}
                              for ln in o.lines.all()]}
                   for o in orders],
        "unsubscribe_feedback": [{"reasons": f.reasons, "comment": f.comment, "at": _iso(f.created_at)}
                                 for f in UnsubscribeFeedback.objects.filter(contact=contact)],
    }


def contact_export_pdf(contact: Contact) -> bytes:
    """The same export as a readable PDF (WeasyPrint)."""
    from weasyprint import HTML

    html = render_to_string("pdf/compliance/contact_export.html", {"data": contact_export(contact)})
    return HTML(string=html).write_pdf()


@transaction.atomic
def contact_erase(*, contact: Contact, actor: str, reference: str = "") -> ErasureRecord:
    """Erase a person: keep a suppression hash per address and an audit entry; leave orders intact."""
    summary = {"consent_events": contact.consent_events.count(), "events": contact.events.count(),
               "orders_kept_detached": contact.orders.count(), "suppressions_kept_as_hash": 0}
    addresses = [("email", contact.email), ("sms", str(contact.phone))] if contact.phone else [("email", contact.email)]
    for channel, address in addresses:
        if not address:
            continue
        h = address_hash(channel, address)
        if not Suppression.objects.active().filter(channel=channel, address_hash=h,
                                                   reason=SuppressionReason.ERASED).exists():
            Suppression.objects.create(channel=channel, address_hash=h, reason=SuppressionReason.ERASED,
                                       detail="erased on request")
        summary["suppressions_kept_as_hash"] += Suppression.objects.filter(channel=channel, address_hash=h).update(
            address="", contact=None)
        EspEvent.objects.filter(recipient_hash=h).update(recipient="", raw={}, description="")
    pk = contact.pk
    contact.delete()
    return ErasureRecord.objects.create(contact_pk=pk, actor=actor[:150], request_reference=reference[:200],
                                        summary=summary)
