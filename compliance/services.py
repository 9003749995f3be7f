"""Writes on consent, suppression and privacy. Views, admin actions, tasks, commands and signal
receivers call these functions; none of them repeats the rules.

The rule every peer we studied got wrong at least once lives in consent_record() (applied by
compliance.consent, which records whole batches the same way): a statement
from an import, the API, a shop webhook or staff can never turn an unsubscribed, complained,
erased or otherwise suppressed person back into a subscribed one. Only the person can, through
something that proves they hold the address (PERSON_SOURCES: the double opt-in link, the
preference center link, SMS START); a sign-up form may only start a double opt-in.
"""

import logging
import re
import unicodedata
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from compliance import consent
from compliance.addresses import address_hash, email_quality, email_suspect, normalize
from compliance.consent import CHANNELS, PUSH_REASONS
from compliance.models import (
    Consent,
    ConsentEvent,
    ConsentSource,
    ConsentStatus,
    Frequency,
    Preference,
    Suppression,
    SuppressionReason,
    Topic,
    UnsubscribeFeedback,
)
from segments.models import Contact
from segments.signals import StatedConsent

log = logging.getLogger(__name__)


def contact_address(contact: Contact, channel: str) -> str:
    """The address a channel reaches; push rides on the contact's email/phone identity."""
    if channel == "email":  # the phone is not read for email (a sender may load contacts without it)
        return consent.contact_address(contact.email, None, channel)
    return consent.contact_address(contact.email, contact.phone, channel)


def _hash_for(contact: Contact, channel: str) -> str | None:
    # Only SMS suppressions are filed under the phone; email and push under the email address.
    key = consent.suppression_key(contact.email, contact.phone if channel == "sms" else None, channel)
    return key[1] if key else None


# Consent -----------------------------------------------------------------------------------

def consent_status(contact: Contact, channel: str) -> str:
    row = Consent.objects.filter(contact=contact, channel=channel).values_list("status", flat=True).first()
    return row or ConsentStatus.NEVER_ASKED


def consent_status_from_log(contact: Contact, channel: str) -> str:
    """The status as the append-only log alone says it (tests check Consent stays in step)."""
    last = (ConsentEvent.objects.filter(contact=contact, channel=channel, accepted=True)
            .order_by("-recorded_at", "-id").values_list("status", flat=True).first())
    return last or ConsentStatus.NEVER_ASKED


def active_suppressions(contact: Contact, channel: str) -> set[str]:
    h = _hash_for(contact, channel)
    if not h:
        return set()
    key_channel = "sms" if channel == "sms" else "email"
    reasons = set(Suppression.objects.active().filter(channel=key_channel, address_hash=h)
                  .values_list("reason", flat=True))
    return reasons & PUSH_REASONS if channel == "push" else reasons


def _change(contact: Contact, **fields) -> consent.Change:
    return consent.Change(contact_id=contact.pk, email=contact.email,
                          phone=str(contact.phone) if contact.phone else None, **fields)


def consent_record(*, contact: Contact, channel: str, status: str, source: str, consent_text: str = "",
                   ip: str | None = None, user_agent: str = "", actor: str = "", proof: dict | None = None,
                   occurred_at: datetime | None = None, note: str = "") -> ConsentEvent | None:
    """Append a consent event and move the current status with it, if the rules allow.

    Returns the event (accepted or refused-but-recorded), or None when nothing changes
    (a repeated one-click POST, a second confirmation) so replays add no rows. The rules are
    compliance.consent.record_batch()'s: this is a batch of one.
    """
    change = _change(contact, channel=channel, status=status, source=source, consent_text=consent_text, ip=ip,
                     user_agent=user_agent, actor=actor, proof=proof, occurred_at=occurred_at, note=note)
    return consent.record_batch([change], contacts={contact.pk: contact})[0]


def unsubscribe(*, contact: Contact, channel: str, source: str, **proof) -> ConsentEvent | None:
    return consent_record(contact=contact, channel=channel, status=ConsentStatus.UNSUBSCRIBED, source=source,
                          **proof)


def unsubscribe_all(*, contact: Contact, source: str, **proof) -> int:
    """Withdraw marketing consent on every channel (a complaint, a staff action on request)."""
    return sum(1 for ch in CHANNELS if unsubscribe(contact=contact, channel=ch, source=source, **proof))


def consent_statement_receive(*, contact: Contact, channel: str, state: str, source: str, proof: dict | None = None,
                              occurred_at: datetime | None = None) -> ConsentEvent | None:
    """A statement from an import, the API or a shop webhook (segments.signals.consent_stated).

    A batch of one of compliance.consent.statements_receive(), which segments.signals.consents_stated
    (a chunk of an import) reaches with the whole batch: see there for the rules.
    """
    statement = StatedConsent(contact_id=contact.pk, channel=channel, state=state, source=source,
                                  proof=proof or {}, occurred_at=occurred_at)
    return consent.statements_receive([statement], contacts={contact.pk: contact})[0]


def consent_statements_receive(*, statements) -> None:
    """A batch of statements (segments.signals.consents_stated): a handful of queries for the batch."""
    consent.statements_receive(list(statements), results=False)


# Preferences ---------------------------------------------------------------------------------

def preference_for(contact: Contact) -> Preference:
    pref = Preference.objects.filter(contact=contact).first()
    return pref or Preference(contact=contact, topics=list(Topic.values), frequency=Frequency.NEWS)


@transaction.atomic
def preferences_update(*, contact: Contact, channels: dict[str, bool], topics: list[str], frequency: str,
                       consent_texts: dict[str, str], ip: str | None = None, user_agent: str = "") -> list[str]:
    """Apply the preference center form. Returns the channels whose consent changed."""
    pref = preference_for(contact)
    pref.topics = [t for t in Topic.values if t in topics]
    pref.frequency = frequency if frequency in Frequency.values else Frequency.NEWS
    pref.save()
    changed = []
    for channel, wanted in channels.items():
        status = ConsentStatus.SUBSCRIBED if wanted else ConsentStatus.UNSUBSCRIBED
        if not wanted and consent_status(contact, channel) != ConsentStatus.SUBSCRIBED:
            continue  # leaving an unticked box unticked is not a withdrawal to record
        event = consent_record(contact=contact, channel=channel, status=status,
                               source=ConsentSource.PREFERENCE_CENTER, consent_text=consent_texts.get(channel, ""),
                               ip=ip, user_agent=user_agent, actor="the person")
        if event is not None and event.accepted:
            changed.append(channel)
    return changed


def unsubscribe_feedback_record(*, contact: Contact, reasons: list[str], comment: str = "") -> UnsubscribeFeedback:
    valid = [r for r in reasons if r in UnsubscribeFeedback.Reason.values]
    return UnsubscribeFeedback.objects.create(contact=contact, reasons=valid, comment=comment[:2000])


# Suppression -------------------------------------------------------------------------------

def suppress(*, channel: str, address: str, reason: str, contact: Contact | None = None, detail: str = "",
             at: datetime | None = None) -> Suppression | None:
    """Add an active suppression once (idempotent: replays and races find the existing row)."""
    key_channel = "sms" if channel == "sms" else "email"
    h = address_hash(key_channel, address)
    existing = Suppression.objects.active().filter(channel=key_channel, address_hash=h, reason=reason).first()
    if existing:
        return existing
    try:
        with transaction.atomic():
            return Suppression.objects.create(
                channel=key_channel, address_hash=h, address=normalize(key_channel, address)[:254],
                contact=contact, reason=reason, detail=detail[:255], created_at=at or timezone.now())
    except IntegrityError:
        return Suppression.objects.active().filter(channel=key_channel, address_hash=h, reason=reason).first()


def suppressions_lift(*, contact: Contact, channel: str, reasons, by: str) -> int:
    h = _hash_for(contact, channel)
    if not h:
        return 0
    key_channel = "sms" if channel == "sms" else "email"
    return Suppression.objects.active().filter(channel=key_channel, address_hash=h, reason__in=list(reasons)).update(
        lifted_at=timezone.now(), lifted_by=by[:150])


def intake_check(contact: Contact) -> str:
    """Flag an obviously fake, role or invalid email at intake so it never gets marketing."""
    if not contact.email:
        return "ok"
    quality = email_quality(contact.email)
    if quality == "invalid":
        suppress(channel="email", address=contact.email, reason=SuppressionReason.INVALID, contact=contact,
                 detail="failed the address check at intake")
    elif quality == "suspect":
        suppress(channel="email", address=contact.email, reason=SuppressionReason.SUSPECT, contact=contact,
                 detail="fake or role address")
    return quality


def intake_check_batch(contacts: list[tuple[int, str | None]]) -> int:
    """intake_check for contacts created in bulk (segments.signals.contacts_created): their emails were
    validated by the writer, so only the fake/role rules remain. Returns how many were suppressed."""
    flagged = [(cid, email) for cid, email in contacts if email and email_suspect(email)]
    for cid, email in flagged:
        suppress(channel="email", address=email, reason=SuppressionReason.SUSPECT, contact=Contact(pk=cid),
                 detail="fake or role address")
    return len(flagged)


# Double opt-in -------------------------------------------------------------------------------

@transaction.atomic
def signup_request(*, email: str, consent_text: str, affirmative: bool, ip: str | None = None,
                   user_agent: str = "", first_name: str = "") -> Contact | None:
    """A sign-up form was submitted. Consent needs the box ticked by the person (no pre-ticked boxes).

    With double opt-in (default) the contact becomes pending and gets one confirmation email;
    the answer is the same whatever the address's state, so the form reveals nothing.
    """
    if not affirmative:
        return None
    contact = Contact.objects.by_identity(email=email).first()
    if contact is None:
        contact = Contact.objects.create(email=email, first_name=first_name[:100], source="form")
        intake_check(contact)
    status = ConsentStatus.PENDING if settings.COMPLIANCE["DOUBLE_OPT_IN"] else ConsentStatus.SUBSCRIBED
    if consent_status(contact, "email") == ConsentStatus.SUBSCRIBED:
        return contact
    consent_record(contact=contact, channel="email", status=status, source=ConsentSource.FORM,
                   consent_text=consent_text, ip=ip, user_agent=user_agent, actor="the person")
    if consent_status(contact, "email") == ConsentStatus.PENDING:
        transaction.on_commit(lambda: doi_send(contact=contact))
    return contact


def doi_send(*, contact: Contact, at: datetime | None = None) -> bool:
    """Send the confirmation email (transactional, through the gate, at most DOI_MAX_PER_DAY a day)."""
    from compliance import gate
    from compliance.messaging import send_confirmation_email

    at = at or timezone.now()
    recent = contact.send_logs.filter(message_key__startswith="doi:", outcome="sent",
                                      at__gte=at - timedelta(days=1)).count()
    if recent >= settings.COMPLIANCE["DOI_MAX_PER_DAY"]:
        log.info("double opt-in email to contact %s throttled", contact.pk)
        return False
    decision = gate.can_send(contact=contact, channel="email", purpose="transactional", at=at)
    key = f"doi:{contact.pk}:{uuid.uuid4().hex[:16]}"  # each confirmation email is its own message
    if not decision.allowed:
        gate.record_refused(decision, message_key=key)
        return False
    send_confirmation_email(contact)
    gate.record_sent(contact=contact, channel="email", purpose="transactional", at=at, message_key=key)
    return True


@transaction.atomic
def doi_confirm(*, contact: Contact, ip: str | None = None, user_agent: str = "") -> bool:
    """The person pressed the confirm button: pending -> subscribed, with the original text as proof."""
    status = consent_status(contact, "email")
    if status == ConsentStatus.SUBSCRIBED:
        return True
    if status != ConsentStatus.PENDING:
        return False
    pending = (ConsentEvent.objects.filter(contact=contact, channel="email", status=ConsentStatus.PENDING,
                                           accepted=True).order_by("-recorded_at", "-id").first())
    consent_record(contact=contact, channel="email", status=ConsentStatus.SUBSCRIBED,
                   source=ConsentSource.DOUBLE_OPT_IN, consent_text=pending.consent_text if pending else "",
                   ip=ip, user_agent=user_agent, actor="the person",
                   proof={"confirmed_at": timezone.now().isoformat(),
                          "requested_event_id": pending.pk if pending else None,
                          "requested_at": pending.occurred_at.isoformat() if pending else None})
    return True


# SMS keywords --------------------------------------------------------------------------------

# Twilio's default opt-out words, the FCC's per-se list and the words AWS requires (ARRET, REMOVE, TD).
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "ARRET", "REMOVE", "TD"}
START_WORDS = {"START", "UNSTOP", "YES"}
HELP_WORDS = {"HELP", "INFO"}
PROBABLE_OPT_OUT_NOTE = "probable opt-out in free text: review"
# The FCC (47 CFR 64.1200(a)(10), April 2025) lets people revoke "by any reasonable means": words a
# reasonable person would understand as "stop texting me" count, not only the keywords. Such a text is
# honoured at once (an opt-out is never the risky mistake) and flagged so staff can look at it.
_PROBABLE_OPT_OUT = re.compile(r"""
    \b(stop|quit|cease)\b[^.!?]*\b(text|texts|texting|messag\w*|sms|contact\w*|send\w*|spam\w*)\b
  | ^\W*(stop|stopall|unsubscribe|quit|revoke|cancel|end)\W+(please|pls|plz|now|thanks|thank\s+you)\W*$
  | \b(remove|take)\s+(me|my\s+number)\b
  | \bunsubscribe\b | \bopt[\s-]*out\b
  | \b(don['\u2019]?t|do\s+not|no\s+more|never)\b[^.!?]*\b(text|texts|texting|messag\w*|sms|contact\w*)\b
  | \bleave\s+me\s+alone\b | \bwrong\s+number\b | \bnot\s+interested\b
  | \bno\s+mas\b | \bbasta\b | \bberhenti\b | \barret(e|ez)?\b
""", re.IGNORECASE | re.VERBOSE)


def _keyword(body: str) -> str:
    # "Stop", " stop ", "STOP." and "opt out" all mean the same single keyword.
    return "".join(ch for ch in (body or "").upper() if ch.isalpha())


@transaction.atomic
def sms_keyword_handle(*, phone: str, body: str, message_id: str = "") -> str | None:
    """Inbound SMS: apply STOP/START/HELP and return the one reply to send (None: no reply).

    The channels app's Twilio webhook calls this and sends the returned text as its reply.
    """
    from segments.middleware import current_shop

    keyword = _keyword(body)
    note = ""
    if keyword not in STOP_WORDS | START_WORDS | HELP_WORDS:
        plain = "".join(ch for ch in unicodedata.normalize("NFKD", body or "") if not unicodedata.combining(ch))
        if not _PROBABLE_OPT_OUT.search(plain):
            return None
        keyword, note = "STOP", PROBABLE_OPT_OUT_NOTE
    shop = current_shop()
    number = normalize("sms", phone)
    contact = Contact.objects.by_identity(phone=number).first()
    if contact is None and keyword not in HELP_WORDS:
        # Honour a STOP from an unknown number too, so a later import cannot text them.
        contact = Contact.objects.create(phone=number, source="sms_keyword")
    proof = {"message_id": message_id, "keyword": keyword}
    if note:
        proof = {"message_id": message_id, "free_text": (body or "")[:320]}
    with translation.override((contact.locale if contact else "") or shop.default_locale or None):
        names = {"shop": shop.name, "support": shop.sender_email or shop.website_url}
        if keyword in HELP_WORDS:
            return _("%(shop)s: marketing texts, message frequency varies. Help: %(support)s. "
                     "Msg&data rates may apply. Reply STOP to unsubscribe.") % names
        if keyword in STOP_WORDS:
            changed = unsubscribe(contact=contact, channel="sms", source=ConsentSource.SMS_KEYWORD,
                                  actor="the person", proof=proof, note=note)
            if changed is None:
                return None  # the FCC allows one confirmation text, not one per repeated STOP
            return _("%(shop)s: you are unsubscribed and will receive no more texts. "
                     "Reply START to resubscribe.") % names
        consent_record(contact=contact, channel="sms", status=ConsentStatus.SUBSCRIBED,
                       source=ConsentSource.SMS_KEYWORD, actor="the person", proof=proof,
                       consent_text=f"Texted {keyword} to resubscribe")
        return _("%(shop)s: you are subscribed to marketing texts again. Message frequency varies. "
                 "Msg&data rates may apply. Reply HELP for help, STOP to unsubscribe.") % names

def mailto_unsubscribe(*, subject: str) -> bool:
    """An email to the List-Unsubscribe mailto: address; the subject carries the signed token."""
    from compliance import tokens

    for word in subject.replace("%20", " ").split():
        try:
            payload = tokens.read_unsubscribe(word)
        except tokens.TokenInvalid:
            continue
        contact = tokens.contact_for(payload)
        if contact is not None:
            unsubscribe(contact=contact, channel=payload.get("ch", "email"), source=ConsentSource.MAILTO,
                        actor="the person")
            return True
    return False
