"""A batch of consent statements (segments.signals.consents_stated) ends exactly where the same
statements sent one by one (consent_stated) end: same Consent rows, same log, same suppressions,
same double opt-in emails. Two identical sets of contacts, one per path, compared after random
statements (several per contact and channel, so later statements must see earlier ones)."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.utils import timezone

from compliance import services
from compliance.models import Consent, ConsentEvent, ConsentSource, Suppression, SuppressionReason
from segments.models import Contact
from segments.signals import StatedConsent, consent_stated, consents_stated

pytestmark = pytest.mark.django_db

CONTACTS = 9
CHANNELS = ["email", "sms", "push", "fax"]
STATES = ["subscribed", "subscribed", "pending", "unsubscribed", "cleaned", "not_subscribed", "maybe"]
SOURCES = ["import", "import", "api", "shop_webhook", "admin", "form", "preference_center", "double_opt_in",
           "sms_keyword", "zapier"]
SMS_TEXT = "I agree to marketing texts. Not a condition of purchase."


def _people(prefix: str, area: str) -> list[Contact]:
    """Nine people in every starting state that matters; the two sets differ only in their addresses."""
    people = []
    for i in range(CONTACTS):
        email = None if i == 7 else f"{prefix}{i}@kedai-customer.my"
        phone = None if i in (6, 8) else f"+601{area}00{i:04d}"
        people.append(Contact.objects.create(email=email, phone=phone))
    c = people
    services.consent_record(contact=c[1], channel="email", status="subscribed", source="import", actor="seed")
    services.unsubscribe(contact=c[2], channel="email", source=ConsentSource.ONE_CLICK)
    services.consent_record(contact=c[3], channel="sms", status="subscribed", source="form", consent_text=SMS_TEXT)
    services.suppress(channel="email", address=c[4].email, reason=SuppressionReason.COMPLAINT, contact=c[4])
    services.suppress(channel="email", address=c[5].email, reason=SuppressionReason.HARD_BOUNCE, contact=c[5])
    services.suppress(channel="sms", address=str(c[5].phone), reason=SuppressionReason.ERASED)
    services.suppress(channel="email", address=c[0].email, reason=SuppressionReason.MANUAL, contact=c[0])
    services.unsubscribe(contact=c[8], channel="sms", source=ConsentSource.SMS_KEYWORD)
    return people


def _statements(rng: random.Random, n: int) -> list[dict]:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(n):
        proof = {}
        if rng.random() < 0.5:
            proof["consent_text"] = rng.choice([SMS_TEXT, "Email me offers", ""])
        if rng.random() < 0.3:
            proof["ip"] = rng.choice(["198.51.100.4", "not an ip", "2001:db8::1"])
        if rng.random() < 0.3:
            proof["user_agent"], proof["actor"] = "Shop/2.0", rng.choice(["ana", "shopify"])
        if rng.random() < 0.4:
            proof["key"] = f"stmt-{rng.randrange(6)}"  # some keys come back: replays
        if rng.random() < 0.2:
            proof["lines"] = [rng.randrange(100), rng.randrange(100)]
            proof["when"] = base  # not JSON: recorded as text
        out.append({"who": rng.randrange(CONTACTS), "channel": rng.choice(CHANNELS), "state": rng.choice(STATES),
                    "source": rng.choice(SOURCES), "proof": proof,
                    "occurred_at": None if rng.random() < 0.2 else base + timedelta(hours=rng.randrange(1000))})
    return out


def _when(value: datetime | None, now: datetime) -> datetime | str | None:
    return "now" if value is not None and abs(value - now) < timedelta(minutes=5) else value


def _state(people: list[Contact]) -> dict:
    """Everything the statements can change, with the set's own ids and addresses taken out."""
    index = {c.pk: n for n, c in enumerate(people)}
    names = {**{c.email: f"email {n}" for n, c in enumerate(people) if c.email},
             **{str(c.phone): f"phone {n}" for n, c in enumerate(people) if c.phone}}
    now = timezone.now()
    consents = sorted((index[r.contact_id], r.channel, r.status, r.source, _when(r.changed_at, now))
                      for r in Consent.objects.filter(contact__in=people))
    events = [(index[e.contact_id], e.channel, e.previous_status, e.status, e.source, e.accepted, e.note,
               e.consent_text, e.consent_text_sha256, e.ip, e.user_agent, e.actor, e.proof, _when(e.occurred_at, now))
              for e in ConsentEvent.objects.filter(contact__in=people).order_by("recorded_at", "id")]
    suppressions = sorted((s.channel, names[s.address], s.reason, s.detail, index.get(s.contact_id),
                           s.lifted_at is None, s.lifted_by) for s in Suppression.objects.filter(address__in=names))
    outbox = sorted(names[m.to[0]] for m in mail.outbox if m.to[0] in names)
    return {"consents": consents, "events": events, "suppressions": suppressions, "outbox": outbox}


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_of_statements_ends_where_the_same_statements_one_by_one_end(shop, seed,
                                                                            django_capture_on_commit_callbacks):
    rng = random.Random(seed)
    one_by_one, batched = _people("a", "2"), _people("b", "3")
    statements = _statements(rng, 80)

    with django_capture_on_commit_callbacks(execute=True):
        for s in statements:
            consent_stated.send(sender=None, contact=Contact.objects.get(pk=one_by_one[s["who"]].pk),
                                channel=s["channel"], state=s["state"], source=s["source"], proof=dict(s["proof"]),
                                occurred_at=s["occurred_at"], trigger_flows=False)
    with django_capture_on_commit_callbacks(execute=True):
        consents_stated.send(sender=None, trigger_flows=False, statements=[
            StatedConsent(contact_id=batched[s["who"]].pk, channel=s["channel"], state=s["state"], source=s["source"],
                          proof=dict(s["proof"]), occurred_at=s["occurred_at"]) for s in statements])

    expected, got = _state(one_by_one), _state(batched)
    assert got["consents"] == expected["consents"]
    assert got["events"] == expected["events"]
    assert got["suppressions"] == expected["suppressions"]
    assert got["outbox"] == expected["outbox"]
    # The statements did something worth comparing: changes, refusals and replays all happened.
    accepted = [e for e in expected["events"] if e[5]]
    assert accepted and len(accepted) < len(expected["events"])


def test_a_batch_costs_a_handful_of_queries_whatever_its_size(shop, django_assert_max_num_queries):
    people = [Contact.objects.create(email=f"q{i}@kedai-customer.my", phone=f"+6014000{i:04d}") for i in range(300)]
    statements = [StatedConsent(contact_id=c.pk, channel=ch, state="subscribed", source="import",
                                proof={"key": f"q:{c.pk}:{ch}"}) for c in people for ch in ("email", "sms")]
    with django_assert_max_num_queries(40):
        consents_stated.send(sender=None, statements=statements, trigger_flows=False)
    assert Consent.objects.filter(contact__in=people, status="subscribed").count() == 300  # email: accepted
    assert ConsentEvent.objects.filter(contact__in=people, channel="sms", accepted=False).count() == 300  # no text
    with django_assert_max_num_queries(8):  # the same statements again: replays add nothing
        consents_stated.send(sender=None, statements=statements, trigger_flows=False)
    assert ConsentEvent.objects.filter(contact__in=people).count() == 600


def test_a_replayed_refused_statement_is_not_recorded_twice(contact):
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ONE_CLICK)
    for _ in range(2):
        consent_stated.send(sender=None, contact=contact, channel="email", state="subscribed", source="import",
                            proof={"key": "import:abc:7:email", "line": 7})
    assert ConsentEvent.objects.filter(contact=contact, accepted=False).count() == 1


def test_an_imported_files_consent_columns_become_consent_records_chunk_by_chunk(shop, tmp_path, settings):
    from django.core.management import call_command

    settings.IMPORT_CHUNK_ROWS = 2  # several chunks, one consents_stated each
    gone = Contact.objects.create(email="gone@kedai-customer.my")
    services.unsubscribe(contact=gone, channel="email", source=ConsentSource.ONE_CLICK)
    path = tmp_path / "contacts.csv"
    path.write_text("email,phone,country,email_consent,sms_consent,consent_at,consent_text\n"
                    "new@kedai-customer.my,0123450001,MY,yes,yes,2024-05-01T10:00:00Z,\n"
                    "texter@kedai-customer.my,0123450002,MY,,yes,2024-05-02T10:00:00Z," + SMS_TEXT + "\n"
                    "gone@kedai-customer.my,,,yes,,,\n"
                    "bounced@kedai-customer.my,,,cleaned,,,\n"
                    "no@kedai-customer.my,,,no,,,\n")
    call_command("import_contacts", str(path), actor="ana")

    def status(email, channel="email"):
        return services.consent_status(Contact.objects.get(email=email), channel)

    assert status("new@kedai-customer.my") == "subscribed"
    assert status("new@kedai-customer.my", "sms") == "never_asked"  # no consent text: refused, recorded
    refused = ConsentEvent.objects.get(contact__email="new@kedai-customer.my", channel="sms")
    assert not refused.accepted and "consent text" in refused.note and refused.proof["line"] == 2
    assert status("texter@kedai-customer.my", "sms") == "subscribed"
    assert status("gone@kedai-customer.my") == "unsubscribed"  # never resubscribed by an import
    bounced = Contact.objects.get(email="bounced@kedai-customer.my")
    assert status(bounced.email) == "unsubscribed"
    assert services.active_suppressions(bounced, "email") == {"hard_bounce"}
    assert status("no@kedai-customer.my") == "never_asked"
    accepted = ConsentEvent.objects.get(contact__email="new@kedai-customer.my", channel="email")
    assert accepted.occurred_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert (accepted.proof["file"], accepted.proof["actor"], accepted.source) == ("contacts.csv", "ana", "import")
    assert Consent.objects.get(contact=accepted.contact, channel="email").changed_at == accepted.occurred_at
    n = ConsentEvent.objects.count()
    call_command("import_contacts", str(path), actor="ana")  # the same file again: the same statements
    assert ConsentEvent.objects.count() == n


@pytest.mark.parametrize("source", ["double_opt_in", "preference_center", "sms_keyword"])
def test_a_statement_cannot_borrow_a_source_that_proves_the_person_acted(shop, source):
    """Only compliance's own pages and the phone's own text act as the person. An import, the API or
    a shop webhook naming such a source is recorded as "api" and cannot resubscribe anyone."""
    SMS = "I agree to marketing texts. Not a condition of purchase."
    gone = Contact.objects.create(email="gone@kedai-customer.my", phone="+60123000001")
    services.unsubscribe(contact=gone, channel="email", source=ConsentSource.ONE_CLICK)
    services.unsubscribe(contact=gone, channel="sms", source=ConsentSource.SMS_KEYWORD)
    bounced = Contact.objects.create(email="bounced@kedai-customer.my")
    services.suppress(channel="email", address=bounced.email, reason=SuppressionReason.HARD_BOUNCE, contact=bounced)

    consents_stated.send(sender=Contact, statements=[
        StatedConsent(contact_id=gone.pk, channel="email", state="subscribed", source=source),
        StatedConsent(contact_id=gone.pk, channel="sms", state="subscribed", source=source,
                      proof={"consent_text": SMS}),
        StatedConsent(contact_id=bounced.pk, channel="email", state="subscribed", source=source),
    ])

    assert Consent.objects.get(contact=gone, channel="email").status == "unsubscribed"
    assert Consent.objects.get(contact=gone, channel="sms").status == "unsubscribed"
    assert not Consent.objects.filter(contact=bounced, status="subscribed").exists()
    assert Suppression.objects.get(address=bounced.email).lifted_at is None
    refused = ConsentEvent.objects.filter(source="api", accepted=False).order_by("id")
    assert [(e.contact_id, e.channel) for e in refused] == [(gone.pk, "email"), (gone.pk, "sms"), (bounced.pk, "email")]
    assert all(e.proof["original_source"] == source for e in refused)
