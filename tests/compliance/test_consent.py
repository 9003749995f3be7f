import hashlib

import pytest
from django.core import mail
from django.db import transaction

from compliance import gate, services
from compliance.models import Consent, ConsentEvent, ConsentSource, ConsentStatus, SuppressionReason
from segments import timeline
from segments.signals import consent_stated
from tests.compliance.conftest import make_contact, subscribe

pytestmark = pytest.mark.django_db


def state(contact, channel="email"):
    return services.consent_status(contact, channel)


def test_every_change_appends_to_the_log_and_the_current_status_follows_it(contact):
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ONE_CLICK, ip="203.0.113.9",
                         user_agent="Mail/1.0")
    services.consent_record(contact=contact, channel="email", status=ConsentStatus.SUBSCRIBED,
                            source=ConsentSource.PREFERENCE_CENTER, consent_text="Yes, email me")
    events = list(ConsentEvent.objects.filter(contact=contact).order_by("recorded_at", "id"))
    assert [(e.previous_status, e.status, e.source) for e in events] == [
        ("never_asked", "subscribed", "import"),
        ("subscribed", "unsubscribed", "one_click"),
        ("unsubscribed", "subscribed", "preference_center"),
    ]
    assert events[1].ip == "203.0.113.9" and events[1].user_agent == "Mail/1.0"
    assert events[2].consent_text_sha256 == hashlib.sha256(b"Yes, email me").hexdigest()
    assert state(contact) == services.consent_status_from_log(contact, "email") == "subscribed"


def test_the_consent_log_cannot_be_edited_or_deleted(contact):
    event = ConsentEvent.objects.filter(contact=contact).first()
    event.note = "changed later"
    with pytest.raises(RuntimeError):
        event.save()
    with pytest.raises(RuntimeError):
        event.delete()


def test_repeating_the_same_change_adds_no_rows(contact):
    n = ConsentEvent.objects.count()
    assert services.consent_record(contact=contact, channel="email", status="subscribed", source="import") is None
    assert ConsentEvent.objects.count() == n


@pytest.mark.parametrize("source", ["import", "api", "shop_webhook", "admin"])
def test_a_statement_never_resubscribes_an_unsubscribed_person(contact, source):
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ONE_CLICK)
    with transaction.atomic():
        consent_stated.send(sender=None, contact=contact, channel="email", state="subscribed", source=source,
                            proof={"file": "customers.csv", "row": 7}, occurred_at=None)
    assert state(contact) == "unsubscribed"
    refused = ConsentEvent.objects.filter(contact=contact, accepted=False).get()
    assert refused.note.startswith("refused: the person unsubscribed") and refused.proof["row"] == 7
    assert not gate.can_send(contact=contact, channel="email", purpose="marketing")


@pytest.mark.parametrize("reason", [SuppressionReason.COMPLAINT, SuppressionReason.ERASED,
                                    SuppressionReason.HARD_BOUNCE, SuppressionReason.SUNSET])
def test_a_statement_never_subscribes_a_suppressed_address(shop, reason):
    c = make_contact(email="siti@kedai-customer.my")
    services.suppress(channel="email", address="Siti@Kedai-Customer.my", reason=reason)
    consent_stated.send(sender=None, contact=c, channel="email", state="subscribed", source="import", proof={})
    assert state(c) == "never_asked"
    assert ConsentEvent.objects.get(contact=c).accepted is False


def test_a_statement_subscribes_a_never_asked_person_with_its_proof(shop):
    c = make_contact(email="ken@kedai-customer.jp")
    consent_stated.send(sender=None, contact=c, channel="email", state="subscribed", source="shop_webhook",
                        proof={"consent_text": "Email me offers", "ip": "198.51.100.4", "actor": "shopify"})
    e = ConsentEvent.objects.get(contact=c)
    assert (e.status, e.source, e.consent_text, e.ip, e.actor) == (
        "subscribed", "shop_webhook", "Email me offers", "198.51.100.4", "shopify")


def test_unsubscribed_and_cleaned_statements_are_always_applied(contact):
    consent_stated.send(sender=None, contact=contact, channel="email", state="cleaned", source="import", proof={})
    assert state(contact) == "unsubscribed"
    assert services.active_suppressions(contact, "email") == {"hard_bounce"}


def test_a_form_statement_starts_double_opt_in_instead_of_subscribing(shop, django_capture_on_commit_callbacks):
    c = make_contact(email="mei@kedai-customer.jp")
    with django_capture_on_commit_callbacks(execute=True):
        consent_stated.send(sender=None, contact=c, channel="email", state="subscribed", source="form",
                            proof={"consent_text": "Sign me up"})
    assert state(c) == "pending"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["mei@kedai-customer.jp"]
    assert "/confirm/" in mail.outbox[0].body


def test_sms_consent_needs_the_consent_text_shown(shop):
    c = make_contact(email=None, phone="+60198765432")
    e = services.consent_record(contact=c, channel="sms", status="subscribed", source="form")
    assert e.accepted is False and "consent text" in e.note
    subscribe(c, "sms", source=ConsentSource.FORM)
    assert state(c, "sms") == "subscribed"


def test_pre_ticked_or_unticked_boxes_record_no_consent(shop):
    assert services.signup_request(email="x@kedai-customer.jp", consent_text="t", affirmative=False) is None
    assert not ConsentEvent.objects.exists()


def test_the_person_can_resubscribe_and_that_lifts_a_complaint_but_not_a_hard_bounce(contact):
    services.suppress(channel="email", address=contact.email, reason=SuppressionReason.COMPLAINT)
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ESP_EVENT)
    services.consent_record(contact=contact, channel="email", status="subscribed",
                            source=ConsentSource.PREFERENCE_CENTER, consent_text="Yes")
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").allowed
    services.suppress(channel="email", address=contact.email, reason=SuppressionReason.HARD_BOUNCE)
    services.consent_record(contact=contact, channel="email", status="subscribed",
                            source=ConsentSource.PREFERENCE_CENTER, consent_text="Yes")
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "suppressed_hard_bounce"


def test_consent_changes_appear_on_the_contact_timeline(contact):
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ONE_CLICK)
    entries = [e for e in timeline.for_contact(contact) if e.kind == "consent"]
    assert len(entries) == 2
    assert "unsubscribed" in entries[0].title and "one-click" in entries[0].detail
    assert entries[0].url.startswith("/admin/compliance/consentevent/")


def test_consent_rows_stay_in_step_with_the_log(contact):
    for status, source in [("unsubscribed", "one_click"), ("subscribed", "preference_center"),
                           ("pending", "form"), ("subscribed", "double_opt_in"), ("unsubscribed", "sms_keyword")]:
        services.consent_record(contact=contact, channel="email", status=status, source=source, consent_text="x")
        assert Consent.objects.get(contact=contact, channel="email").status == \
            services.consent_status_from_log(contact, "email") == status


def test_without_double_opt_in_a_form_still_cannot_resubscribe_or_lift_a_complaint(contact, settings):
    settings.COMPLIANCE = {**settings.COMPLIANCE, "DOUBLE_OPT_IN": False}
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ONE_CLICK)
    services.signup_request(email=contact.email, consent_text="Yes", affirmative=True)
    consent_stated.send(sender=None, contact=contact, channel="email", state="subscribed", source="form", proof={})
    assert state(contact) == "unsubscribed"
    fresh = make_contact(email="complainer@kedai-customer.jp")
    services.suppress(channel="email", address=fresh.email, reason=SuppressionReason.COMPLAINT)
    services.signup_request(email=fresh.email, consent_text="Yes", affirmative=True)
    assert gate.can_send(contact=fresh, channel="email", purpose="marketing").reason == "suppressed_complaint"
