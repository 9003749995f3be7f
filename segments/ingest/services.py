"""Writes shared by every way data comes in: find or create the person, store events, state consent."""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q, Subquery

from segments.ingest import announcer, sql
from segments.ingest.locks import sqlite_writer
from segments.models import Contact, ContactIdentifier, Event
from segments.signals import StatedConsent, consent_stated, consents_stated, contacts_created, events_ingested


@dataclass(frozen=True)
class Identity:
    """Whatever a payload says about who did something. Email wins, then phone, then ids."""

    email: str | None = None  # normalised
    phone: str | None = None  # E.164
    customer_id: str = ""
    customer_source: str = "shop"
    anonymous_id: str = ""
    first_name: str = ""
    last_name: str = ""


@dataclass(slots=True)
class NewEvent:
    """An event to store (store_events takes these or Event instances): the API builds one per event, and a
    plain record costs a tenth of a model instance to make (B2 makes a million)."""

    type: str
    properties: dict
    occurred_at: datetime
    received_at: datetime
    source: str
    idempotency_key: str = ""
    anonymous_id: str = ""
    contact_id: int | None = None


@dataclass
class Resolved:
    contact_ids: list[int | None]
    created: list[int] = field(default_factory=list)


def state_consent(*, contact: Contact, channel: str, state: str, source: str, proof: dict,
                  occurred_at: datetime | None, trigger_flows: bool = True) -> None:
    """Tell the compliance app what the incoming data says; it decides what it may record."""
    consent_stated.send(sender=Contact, contact=contact, channel=channel, state=state, source=source,
                        proof=proof, occurred_at=occurred_at, trigger_flows=trigger_flows)


def state_consents(statements: list[StatedConsent], *, trigger_flows: bool = True) -> None:
    """Many statements at once (a chunk of an import): one signal, recorded as a batch."""
    if statements:
        consents_stated.send(sender=Contact, statements=statements, trigger_flows=trigger_flows)


def _existing(identities: list[Identity]) -> tuple[dict, dict, dict, dict]:
    # Plain SQL: the ORM would prepare every value of a 500-item IN list and parse every phone.
    by_email = sql.ids_by("email", [i.email for i in identities if i.email])
    by_phone = sql.ids_by("phone", [i.phone for i in identities if i.phone])
    ids = {(i.customer_source, i.customer_id) for i in identities if i.customer_id}
    anon = {i.anonymous_id for i in identities if i.anonymous_id}
    by_customer, by_anon = {}, {}
    if ids:
        q = Q()
        for source, value in ids:
            q |= Q(source=source, value=value)
        for source, value, cid in ContactIdentifier.objects.filter(q, kind="shop_customer").values_list(
                "source", "value", "contact_id"):
            by_customer[(source, value)] = cid
    if anon:
        by_anon = dict(ContactIdentifier.objects.filter(kind="anonymous", value__in=anon)
                       .values_list("value", "contact_id"))
    return by_email, by_phone, by_customer, by_anon


def resolve_contacts(identities: list[Identity], *, source: str) -> Resolved:
    """Contact ids for the identities (None when nobody can be named), creating unknown people.

    New contacts get no marketing consent: only a consent statement can give that. Shop customer
    ids and anonymous ids seen with an email or phone are attached to the contact, and the
    anonymous history of a visitor who identifies is merged into the contact. A handful of
    queries per batch, whatever its size.
    """
    by_email, by_phone, by_customer, by_anon = _existing(identities)
    result: list[int | None] = []
    to_create: dict[str, Contact] = {}
    pending_phones: set[str] = set()
    for ident in identities:
        cid = (by_email.get(ident.email) if ident.email else None) or \
              (by_phone.get(ident.phone) if ident.phone else None) or \
              by_customer.get((ident.customer_source, ident.customer_id)) or by_anon.get(ident.anonymous_id)
        if cid is None and (ident.email or ident.phone):
            key = ident.email or ident.phone
            if key not in to_create and (ident.email or ident.phone not in pending_phones):
                phone = ident.phone if ident.phone not in pending_phones else None
                pending_phones.add(phone)
                to_create[key] = Contact(email=ident.email, phone=phone, first_name=ident.first_name[:100],
                                         last_name=ident.last_name[:100], source=source)
        result.append(cid)
    created: list[int] = []
    if to_create:
        created = _create_contacts(list(to_create.values()), by_email, by_phone)
    for n, ident in enumerate(identities):
        if result[n] is None:
            result[n] = (by_email.get(ident.email) if ident.email else None) or \
                        (by_phone.get(ident.phone) if ident.phone else None)
    _attach_identifiers(identities, result, by_customer, by_anon)
    return Resolved(result, created)


def _create_contacts(contacts: list[Contact], by_email: dict, by_phone: dict) -> list[int]:
    """Insert new contacts; a concurrent writer may have inserted the same person meanwhile."""
    try:
        with transaction.atomic():
            Contact.objects.bulk_create(contacts)
    except IntegrityError:
        # Someone else created one of them first: create one by one, taking theirs when it exists.
        for c in contacts:
            c.pk = None
            try:
                with transaction.atomic():
                    c.save()
            except IntegrityError:
                c.pk = Contact.objects.by_identity(email=c.email, phone=str(c.phone or "")).values_list(
                    "pk", flat=True).first()
    created = []
    for c in contacts:
        if c.pk is None:
            continue
        created.append(c.pk)
        if c.email:
            by_email[c.email] = c.pk
        if c.phone:
            by_phone[str(c.phone)] = c.pk
    if created:
        contacts_created.send(sender=Contact, contacts=[(c.pk, c.email) for c in contacts if c.pk is not None])
    return created


def _attach_identifiers(identities, contact_ids, by_customer, by_anon) -> None:
    new: dict[tuple, ContactIdentifier] = {}
    merge: dict[str, int] = {}
    for ident, cid in zip(identities, contact_ids, strict=True):
        if cid is None:
            continue
        if ident.customer_id and (ident.customer_source, ident.customer_id) not in by_customer:
            key = ("shop_customer", ident.customer_source, ident.customer_id)
            new.setdefault(key, ContactIdentifier(contact_id=cid, kind="shop_customer",
                                                  source=ident.customer_source, value=ident.customer_id[:128]))
        if ident.anonymous_id and ident.anonymous_id not in by_anon:
            key = ("anonymous", "tracker", ident.anonymous_id)
            new.setdefault(key, ContactIdentifier(contact_id=cid, kind="anonymous", source="tracker",
                                                  value=ident.anonymous_id[:128]))
            merge[ident.anonymous_id] = cid
    if new:
        ContactIdentifier.objects.bulk_create(new.values(), ignore_conflicts=True)
    for anonymous_id, cid in merge.items():
        merge_anonymous_history(anonymous_id=anonymous_id, contact_id=cid)


def merge_anonymous_history(*, anonymous_id: str, contact_id: int) -> int:
    """Give a visitor's earlier anonymous events to the contact they turned out to be."""
    return Event.objects.filter(anonymous_id=anonymous_id, contact__isnull=True).update(contact_id=contact_id)


def store_events(events: list[Event | NewEvent], *, trigger_flows: bool = True,
                 coalesce: bool = False) -> tuple[list[int], int]:
    """Insert events not seen before (idempotency key per source); returns (new ids, duplicates).

    Duplicates inside the batch are dropped here and those already stored are skipped by the
    INSERT itself (segments.ingest.sql.insert_events), so `events_ingested` names exactly the
    rows stored now, after commit. coalesce: the web endpoints' announcement, one signal for
    many requests (segments.ingest.announcer).
    """
    fresh, seen = [], set()
    for e in events:
        if e.idempotency_key:
            key = (e.source, e.idempotency_key)
            if key in seen:
                continue
            seen.add(key)
        fresh.append(e)
    ids = sql.insert_events(fresh)
    anonymous = any(e.contact_id is None and e.anonymous_id for e in fresh)
    announce_events(ids, trigger_flows=trigger_flows, reattach=anonymous, coalesce=coalesce)
    return ids, len(events) - len(ids)


def store_event_of_known_email(event: NewEvent, identity: Identity, *, trigger_flows: bool = True,
                               coalesce: bool = False) -> tuple[list[int], int] | None:
    """One event of a person named by email alone, on PostgreSQL: the contact's look-up and the insert go
    to the server as one statement, one round trip instead of two (the single-event endpoint's common
    case, benchmark B2). Returns what store_events returns, or None when this path does not apply (other
    identifiers to attach, or SQLite, where a query costs no round trip) or nobody has the email yet: then
    nothing was stored, and the caller takes the general path (resolve_contacts, which creates the person).
    """
    if (connection.vendor != "postgresql" or not identity.email or identity.phone or identity.customer_id
            or identity.anonymous_id):
        return None
    contact_id, event_id = sql.insert_event_of_email(identity.email, event)
    if contact_id is None:
        return None
    event.contact_id = contact_id
    ids = [] if event_id is None else [event_id]
    announce_events(ids, trigger_flows=trigger_flows, coalesce=coalesce)
    return ids, 1 - len(ids)


def reattach_anonymous(ids: list[int]) -> int:
    """Give anonymous events just stored to the contact their visitor has meanwhile turned out to be.

    The visitor may identify (a newsletter form, a tracked email link) while their page views are
    in flight: this batch resolved their anonymous id before the identifier existed, and the
    identify request merged the visitor's history before these rows were committed. Run after
    commit, one of the two always sees the other's rows, so no event is left anonymous.
    """
    known = ContactIdentifier.objects.filter(kind="anonymous", value=OuterRef("anonymous_id"))
    with sqlite_writer():
        return (Event.objects.filter(pk__in=ids, contact__isnull=True).exclude(anonymous_id="")
                .filter(Exists(known)).update(contact_id=Subquery(known.values("contact_id")[:1])))


def announce_events(ids: list[int], *, trigger_flows: bool, reattach: bool = False, coalesce: bool = False) -> None:
    """events_ingested after commit, so receivers (triggers, segments) see committed rows.

    Anonymous events are re-attached first, in the request, so they are announced with their contact.
    """
    if not ids:
        return

    def announce() -> None:
        if reattach:
            reattach_anonymous(ids)
        if coalesce:
            announcer.announce(ids, trigger_flows=trigger_flows)
        else:
            events_ingested.send(sender=Event, event_ids=list(ids), trigger_flows=trigger_flows)

    transaction.on_commit(announce)
