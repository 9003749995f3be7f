"""The consent rules, applied to a batch of changes in a handful of queries.

compliance.services.consent_record() and consent_statement_receive() are batches of one of
record_batch() and statements_receive(): there is one implementation of the rules.

record_batch() applies changes in order against an in-memory picture of the batch's Consent rows
(locked) and active suppressions, then writes: the new ConsentEvents in one bulk INSERT, the
Consent rows that moved in one executemany, new and lifted suppressions, and one segment refresh
(and the double opt-in emails) after commit. A later change of the same contact and channel in
the batch sees what an earlier one did, exactly as one call after another would.
"""

import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from compliance import consent_sql
from compliance.addresses import address_hash, hash_pepper, normalize
from compliance.models import (
    PERSON_LIFTABLE,
    PERSON_SOURCES,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Suppression,
    SuppressionReason,
    acts_as_the_person,
    text_sha256,
)
from segments.models import Contact
from segments.signals import StatedConsent

log = logging.getLogger(__name__)

CHANNELS = ("email", "sms", "push")
# Push rides on the person's identity, not on a mailbox: only these email-keyed reasons apply to it.
PUSH_REASONS = {SuppressionReason.ERASED, SuppressionReason.MANUAL}
STATEMENT_STATUS = {
    "subscribed": ConsentStatus.SUBSCRIBED,
    "pending": ConsentStatus.PENDING,
    "unsubscribed": ConsentStatus.UNSUBSCRIBED,
    "cleaned": ConsentStatus.UNSUBSCRIBED,
}
SMS_TEXT_MISSING = "SMS consent needs the exact consent text shown (prior express written consent)"
IN_CHUNK = 900  # ids per IN list: well inside SQLite's parameter limit


@dataclass(slots=True)
class Change:
    """One asked change of a contact's consent on a channel (what consent_record() takes)."""

    contact_id: int
    email: str | None  # the contact's addresses (suppressions are keyed by them)
    phone: str | None
    channel: str
    status: str
    source: str
    consent_text: str = ""
    ip: str | None = None
    user_agent: str = ""
    actor: str = ""
    proof: dict | None = None
    occurred_at: datetime | None = None
    note: str = ""
    cleaned_by: str = ""  # a "cleaned" statement: suppress the address (hard bounce) first
    doi: bool = False  # accepted: send the double opt-in email after commit
    key: str = ""  # the statement's proof["key"]: once recorded under it, the same statement adds nothing
    new_contact: bool = False  # created in this transaction: no Consent rows, no recorded statements to look up


def contact_address(email: str | None, phone: str | None, channel: str) -> str:
    """The address a channel reaches; push rides on the contact's email/phone identity."""
    if channel == "sms":
        return str(phone or "")
    return email or (str(phone or "") if channel == "push" else "")


def suppression_key(email: str | None, phone: str | None, channel: str,
                    pepper: bytes | None = None) -> tuple[str, str] | None:
    """(key channel, address hash) the suppressions of a contact's channel are filed under."""
    if channel == "sms":
        return ("sms", address_hash("sms", phone, pepper)) if phone else None
    return ("email", address_hash("email", email, pepper)) if email else None


def valid_ip(value) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value).strip())) if value else None
    except ValueError:
        return None


def _chunks(values: list, size: int = IN_CHUNK):
    for i in range(0, len(values), size):
        yield values[i:i + size]


class _Raced(Exception):
    """Another writer created a Consent row of this batch after we looked: run the batch again."""


EVENT_ATTNAMES = ["id", *(f"{f}_id" if f == "contact" else f for f in consent_sql.EVENT_FIELDS)]


class _Batch:
    """The batch's Consent rows (locked) and active suppressions, and the writes it collects."""

    def __init__(self, changes: list[Change], contacts: dict | None, results: bool):
        self.contacts, self.results = contacts or {}, results
        self.now = timezone.now()  # when the batch's events are recorded
        pairs = {(c.contact_id, c.channel) for c in changes}
        known = {(c.contact_id, c.channel) for c in changes if not c.new_contact}
        # [id, status] per (contact, channel); id None: no row yet, inserted at flush if it moved.
        self.rows = consent_sql.lock_rows(list({cid for cid, _ch in known}), sorted({ch for _cid, ch in known})) \
            if known else {}
        for pair in pairs - self.rows.keys():
            self.rows[pair] = [None, ConsentStatus.NEVER_ASKED]
        self.keys: dict[tuple, tuple[str, str] | None] = {}
        self.pepper = hash_pepper()
        self.active: dict[tuple[str, str], dict[str, Suppression]] = {}
        self._load_suppressions(changes)
        self.stated = _stated_keys(changes)
        self.events: list[list] = []  # EVENT_FIELDS values
        self.moved: dict[tuple[int, str], tuple] = {}  # (contact, channel) → (status, source, changed_at)
        self.new_suppressions: list[Suppression] = []
        self.lifted: dict[str, list[int]] = {}  # lifted_by → ids of stored suppressions
        self.refresh: set[int] = set()
        self.doi: list[int] = []

    def _needs_suppressions(self, c: Change) -> bool:
        widening = c.status in (ConsentStatus.SUBSCRIBED, ConsentStatus.PENDING)
        return bool(c.cleaned_by) or (widening and not acts_as_the_person(c.source, c.status)) or (
            c.status == ConsentStatus.SUBSCRIBED and c.source in PERSON_SOURCES)

    def key(self, c: Change) -> tuple[str, str] | None:
        pair = (c.contact_id, c.channel)
        if pair not in self.keys:
            self.keys[pair] = suppression_key(c.email, c.phone, c.channel, self.pepper)
        return self.keys[pair]

    def _load_suppressions(self, changes: list[Change]) -> None:
        keys = {self.key(c) for c in changes if self._needs_suppressions(c)}
        keys |= {self._cleaned_key(c) for c in changes if c.cleaned_by}
        keys.discard(None)
        for pk, channel, h, reason in consent_sql.active_suppressions(sorted({h for _ch, h in keys})):
            if (channel, h) in keys:
                s = Suppression(pk=pk, channel=channel, address_hash=h, reason=reason)
                self.active.setdefault((channel, h), {})[reason] = s

    def _cleaned_key(self, c: Change) -> tuple[str, str] | None:
        address = contact_address(c.email, c.phone, c.channel)
        key_channel = "sms" if c.channel == "sms" else "email"
        return (key_channel, address_hash(key_channel, address, self.pepper)) if address else None

    # --- the rules, one change at a time ---------------------------------------------------------

    def apply(self, c: Change) -> list | None:
        if c.key and (c.contact_id, c.channel, c.key) in self.stated:
            return None
        if c.cleaned_by:
            self.suppress(c, SuppressionReason.HARD_BOUNCE, f"marked cleaned by {c.cleaned_by}")
        row = self.rows[(c.contact_id, c.channel)]
        current = row[1]
        if current == c.status:
            if c.status == ConsentStatus.SUBSCRIBED and c.source in PERSON_SOURCES:
                self.lift(c, PERSON_LIFTABLE, f"person via {c.source}")
            return None
        refusal = ""
        widening = c.status in (ConsentStatus.SUBSCRIBED, ConsentStatus.PENDING)
        if widening and not acts_as_the_person(c.source, c.status):
            refusal = self.resubscribe_blocker(c, current)
        if (not refusal and c.channel == "sms" and c.status == ConsentStatus.SUBSCRIBED
                and c.source != ConsentSource.SMS_KEYWORD and not (c.consent_text or (c.proof or {}).get("consent_text"))):
            refusal = SMS_TEXT_MISSING
        now = self.now
        occurred_at = c.occurred_at or now
        event = [c.contact_id, c.channel, current if refusal else c.status, current, c.source, not refusal,
                 (f"refused: {refusal}" if refusal else c.note)[:255], c.consent_text, text_sha256(c.consent_text),
                 valid_ip(c.ip), (c.user_agent or "")[:400], c.actor[:150], c.proof or {}, occurred_at, now]
        self.events.append(event)
        if c.key:
            self.stated.add((c.contact_id, c.channel, c.key))
        if refusal:
            log.info("consent statement refused for contact %s on %s: %s", c.contact_id, c.channel, refusal)
            return event
        row[1] = c.status
        self.moved[(c.contact_id, c.channel)] = (c.status, c.source, occurred_at)
        self.refresh.add(c.contact_id)
        if c.status == ConsentStatus.SUBSCRIBED and c.source in PERSON_SOURCES:
            self.lift(c, PERSON_LIFTABLE, f"person via {c.source}")
        if c.doi:
            self.doi.append(c.contact_id)
        return event

    def resubscribe_blocker(self, c: Change, current: str) -> str:
        if current == ConsentStatus.UNSUBSCRIBED:
            return "the person unsubscribed"
        key = self.key(c)
        reasons = set(self.active.get(key, {})) if key else set()
        if c.channel == "push":
            reasons &= PUSH_REASONS
        return "suppressed: " + ", ".join(sorted(reasons)) if reasons else ""

    def suppress(self, c: Change, reason: str, detail: str) -> None:
        """services.suppress() for the batch: one active row per address and reason."""
        address = contact_address(c.email, c.phone, c.channel)
        key = self._cleaned_key(c)
        if key is None or reason in self.active.get(key, {}):
            return
        key_channel, h = key
        s = Suppression(channel=key_channel, address_hash=h, address=normalize(key_channel, address)[:254],
                        contact_id=c.contact_id, reason=reason, detail=detail[:255], created_at=timezone.now())
        self.new_suppressions.append(s)
        self.active.setdefault(key, {})[reason] = s

    def lift(self, c: Change, reasons, by: str) -> None:
        key = self.key(c)
        if key is None:
            return
        active = self.active.get(key, {})
        for reason in [r for r in active if r in reasons]:
            s = active.pop(reason)
            if s.pk is None:  # added earlier in this batch: it is stored already lifted
                s.lifted_at, s.lifted_by = timezone.now(), by[:150]
            else:
                self.lifted.setdefault(by[:150], []).append(s.pk)

    # --- writes -----------------------------------------------------------------------------------

    def flush(self) -> None:
        # No row means never asked (segment rules and the gate read it so): rows are created when they move.
        new_rows = [(cid, ch, *self.moved[(cid, ch)]) for (cid, ch), (pk, _status) in sorted(self.rows.items())
                    if pk is None and (cid, ch) in self.moved]
        if new_rows and consent_sql.insert_rows(new_rows) != len(new_rows):
            raise _Raced
        moved = [(pk, *self.moved[pair]) for pair, (pk, _status) in self.rows.items()
                 if pk is not None and pair in self.moved]
        if moved:
            consent_sql.update_rows(sorted(moved))
        for by, ids in self.lifted.items():
            Suppression.objects.filter(pk__in=ids, lifted_at__isnull=True).update(lifted_at=timezone.now(), lifted_by=by)
        if self.new_suppressions:
            # ignore_conflicts: a concurrent writer's identical active row is as good as ours.
            Suppression.objects.bulk_create(self.new_suppressions, ignore_conflicts=True)
        if self.events and not self.results:
            consent_sql.insert_events(self.events, returning=False)
        elif self.events:
            for event, pk in zip(self.events, consent_sql.insert_events(self.events), strict=True):
                event.insert(0, pk)
        if self.refresh:
            ids = sorted(self.refresh)
            transaction.on_commit(lambda: _refresh_segments(ids))
        if self.doi:
            ids, known = list(dict.fromkeys(self.doi)), dict(self.contacts)
            transaction.on_commit(lambda: _doi_send(ids, known))


def _model(event: list | None) -> ConsentEvent | None:
    return None if event is None else ConsentEvent.from_db(connection.alias, EVENT_ATTNAMES, event)


def _stated_keys(changes: list[Change]) -> set[tuple[int, str, str]]:
    """(contact, channel, proof key) of the statements already recorded for these contacts."""
    ids = sorted({c.contact_id for c in changes if c.key and not c.new_contact})
    return {(cid, ch, str(key)) for cid, ch, key in consent_sql.stated_keys(ids)} if ids else set()


def _refresh_segments(contact_ids: list[int]) -> None:
    """Segments with a consent rule move as soon as the consent change is committed."""
    from segments.membership import segment_refresh_for_contacts

    segment_refresh_for_contacts(contact_ids=contact_ids, changed={"consent"})


def _doi_send(contact_ids: list[int], known: dict) -> None:
    from compliance.services import doi_send

    missing = [i for i in contact_ids if i not in known]
    known = {**known, **Contact.objects.in_bulk(missing)} if missing else known
    for cid in contact_ids:
        if cid in known:
            doi_send(contact=known[cid])


def record_batch(changes: list[Change], *, contacts: dict[int, Contact] | None = None,
                 results: bool = True) -> list[ConsentEvent | None]:
    """Apply the changes in order; one result per change: its event (accepted, or refused but
    recorded) or None when nothing changes (a replay). contacts: Contact objects already at hand.
    results=False: an import does not need the events back (nor their model instances)."""
    for c in changes:
        if c.channel not in CHANNELS:
            raise ValueError(f"unknown channel {c.channel!r}")
    if not changes:
        return []
    for attempt in range(3):
        try:
            with transaction.atomic():
                batch = _Batch(changes, contacts, results)
                events = [batch.apply(c) for c in changes]
                batch.flush()
            break
        except _Raced:
            if attempt == 2:
                raise
    return [_model(e) for e in events] if results else []


# --- statements (segments.signals.consent_stated / consents_stated) -----------------------------

_SCALARS = (str, int, float, bool)
# What a statement (an import, the API, a shop webhook) may name as its source: anything but the
# sources that prove the person acted themself (their confirmation link, preference link or text).
# Those reach compliance through its own views only; a statement naming one is recorded as "api" with
# the name it gave kept in the proof, so it can never lift an unsubscribe or a suppression.
STATEMENT_SOURCES = frozenset(ConsentSource.values) - PERSON_SOURCES


def jsonable(value):
    """The proof as JSON can hold it: keys as text, tuples as lists, anything else as its text."""
    if value is None or isinstance(value, _SCALARS):
        return value
    # Scalars are kept inline, without a call each: an import sends 66k proofs of ~10 values (B1).
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): v if v is None or isinstance(v, _SCALARS) else jsonable(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if v is None or isinstance(v, _SCALARS) else jsonable(v) for v in value]
    return str(value)


def _addresses(contact_ids: list[int]) -> dict[int, tuple[str | None, str | None]]:
    """{id: (email, phone)} as stored (E.164 text), without building a PhoneNumber per row."""
    out = {}
    table = connection.ops.quote_name(Contact._meta.db_table)
    pg = connection.vendor == "postgresql"
    for chunk in _chunks(sorted(set(contact_ids)), 5000 if pg else IN_CHUNK):
        where = "id = ANY(%s::bigint[])" if pg else f"id IN ({', '.join(['%s'] * len(chunk))})"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, email, phone FROM {table} WHERE {where}", [chunk] if pg else chunk)  # noqa: S608
            out.update((cid, (email, phone or None)) for cid, email, phone in cursor.fetchall())
    return out


@transaction.atomic
def statements_receive(statements: list[StatedConsent], *, contacts: dict[int, Contact] | None = None,
                       results: bool = True) -> list[ConsentEvent | None]:
    """Statements from imports, the API or shop webhooks, in order; one result per statement.

    "subscribed" becomes a double opt-in request when the source needs one (sign-up forms by
    default); "cleaned" (the shop's system saw it bounce) also suppresses the address; a
    "not_subscribed" statement says nothing about consent and changes nothing; a statement whose
    proof["key"] was recorded before (a re-imported file) is the same statement and adds nothing.
    contacts: Contact objects already at hand (their addresses are used as they are); so are the
    addresses a statement carries (StatedConsent.addresses: an import states them for the contacts
    it has just written, which spares reading 2,000 contacts back per chunk).
    results=False: return nothing (an import chunk does not look at the events).
    """
    contacts = contacts or {}
    out: list[ConsentEvent | None] = [None] * len(statements)
    todo = []
    for n, s in enumerate(statements):
        if STATEMENT_STATUS.get(s.state) is None or s.channel not in CHANNELS:
            log.info("ignored consent statement %r on %r for contact %s", s.state, s.channel, s.contact_id)
        else:
            todo.append(n)
    if not todo:
        return out if results else []
    given = {statements[n].contact_id: statements[n].addresses for n in todo
             if statements[n].addresses is not None and statements[n].contact_id not in contacts}
    unknown = [statements[n].contact_id for n in todo
               if statements[n].contact_id not in contacts and statements[n].contact_id not in given]
    addresses = _addresses(unknown) if unknown else {}
    addresses.update(given)
    for cid, c in contacts.items():
        addresses[cid] = (c.email, str(c.phone) if c.phone else None)
    changes, places = [], []
    doi = settings.COMPLIANCE["DOUBLE_OPT_IN"] and settings.COMPLIANCE["DOI_SOURCES"]
    for n in todo:
        s = statements[n]
        if s.contact_id not in addresses:
            continue  # the contact is gone (erased meanwhile)
        proof, source = s.proof or {}, s.source  # jsonable() below copies it: the sender's dict is left alone
        if source not in STATEMENT_SOURCES:
            proof = {"original_source": source, **proof}
            source = ConsentSource.API
        status = STATEMENT_STATUS[s.state]
        email, phone = addresses[s.contact_id]
        change = Change(contact_id=s.contact_id, email=email, phone=phone, channel=s.channel, status=status,
                        source=source, consent_text=str(proof.get("consent_text", "")), ip=proof.get("ip") or None,
                        user_agent=str(proof.get("user_agent", "")), actor=str(proof.get("actor", source)),
                        proof=jsonable(proof), occurred_at=s.occurred_at,
                        cleaned_by=source if s.state == "cleaned" else "", key=str(proof.get("key") or ""),
                        new_contact=s.new_contact)
        if status == ConsentStatus.SUBSCRIBED and s.channel == "email" and doi and source in doi:
            change.status, change.note, change.doi = ConsentStatus.PENDING, "double opt-in requested", True
        changes.append(change)
        places.append(n)
    events = record_batch(changes, contacts=contacts, results=results)
    if not results:
        return []
    for n, event in zip(places, events, strict=True):
        out[n] = event
    return out
