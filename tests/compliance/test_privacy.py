import json
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from compliance import gate, privacy, services
from compliance.addresses import address_hash
from compliance.models import ConsentEvent, ErasureRecord, EspEvent, SendLog, Suppression
from segments.models import Contact, Event, Order
from segments.services import contact_stats_refresh
from segments.signals import consent_stated
from tests.compliance.conftest import make_contact, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(contact):
    Order.objects.create(source="shop", external_id="1001", name="#1001", contact=contact,
                         placed_at=timezone.now(), total=Decimal("120.00"), currency="MYR")
    Event.objects.create(contact=contact, type="product_viewed", properties={"title": "Batik scarf"})
    gate.record_sent(contact=contact, channel="email", purpose="marketing", message_key="campaign:1")
    services.suppress(channel="email", address=contact.email, reason="soft_bounces", contact=contact)
    EspEvent.objects.create(esp="Postmark", event_key="k1", event_type="delivered", kind="delivered",
                            recipient=contact.email, recipient_hash=address_hash("email", contact.email),
                            raw={"Recipient": contact.email})
    contact_stats_refresh(contact_ids=[contact.pk])
    return contact


def test_export_holds_everything_about_the_person(customer):
    data = privacy.contact_export(customer)
    assert data["profile"]["email"] == customer.email and data["profile"]["phone"] == "+60123456789"
    assert data["consent_log"][0]["consent_text"] == "Yes, email me"
    assert data["orders"][0]["total"] == "120.00"
    assert data["activity"][0]["properties"]["title"] == "Batik scarf"
    assert data["messages"][0]["message"] == "campaign:1"
    assert data["suppressions"][0]["reason"] == "soft_bounces"
    assert data["email_events"][0]["type"] == "delivered"
    json.dumps(data)  # all plain data


def test_admin_exports_json_and_a_readable_pdf(customer, staff_client):
    url = "/admin/segments/contact/"
    r = staff_client.post(url, {"action": "export_json", "_selected_action": [customer.pk]})
    assert r.status_code == 200 and r["Content-Type"] == "application/json"
    assert json.loads(r.content)["profile"]["email"] == customer.email
    r = staff_client.post(url, {"action": "export_pdf", "_selected_action": [customer.pk]})
    assert r.status_code == 200 and r["Content-Type"] == "application/pdf" and r.content.startswith(b"%PDF")


def test_erasure_keeps_only_a_hash_and_an_audit_entry_and_leaves_revenue(customer, staff_client):
    email, pk = customer.email, customer.pk
    r = staff_client.post("/admin/segments/contact/", {"action": "erase", "_selected_action": [pk]})
    assert r.status_code == 302
    assert not Contact.objects.filter(pk=pk).exists()
    order = Order.objects.get(external_id="1001")
    assert order.contact is None and order.total == Decimal("120.00")
    assert not ConsentEvent.objects.exists() and not Event.objects.exists()
    assert SendLog.objects.get().contact is None  # counts for caps/reputation stay, unnamed
    audit = ErasureRecord.objects.get()
    assert audit.contact_pk == pk and audit.actor == "admin" and audit.summary["orders_kept_detached"] == 1
    assert {s.reason for s in Suppression.objects.active()} == {"erased", "soft_bounces"}
    assert_address_gone_from_every_text_column(email)
    assert_address_gone_from_every_text_column("60123456789")


def assert_address_gone_from_every_text_column(needle: str) -> None:
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        for table in tables:
            if not (table.startswith("compliance_") or table.startswith("segments_")):
                continue
            columns = [c.name for c in connection.introspection.get_table_description(cursor, table)]
            for column in columns:
                cursor.execute(f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE %s',  # noqa: S608
                               [f"%{needle}%"])
                assert cursor.fetchone()[0] == 0, f"{needle} still in {table}.{column}"


def test_reimport_after_erasure_cannot_resubscribe_until_the_person_confirms(customer, django_capture_on_commit_callbacks):
    email = customer.email
    privacy.contact_erase(contact=customer, actor="dpo@kedai.example")
    again = make_contact(email=email.upper())
    consent_stated.send(sender=None, contact=again, channel="email", state="subscribed", source="import",
                        proof={"file": "old-list.csv"})
    assert services.consent_status(again, "email") == "never_asked"
    assert gate.can_send(contact=again, channel="email", purpose="marketing").reason == "suppressed_erased"
    # A new order confirmation is still fine.
    assert gate.can_send(contact=again, channel="email", purpose="transactional").allowed
    # The person signs up again and confirms: only then marketing may go.
    with django_capture_on_commit_callbacks(execute=True):
        services.signup_request(email=email, consent_text="Yes, email me", affirmative=True)
    services.doi_confirm(contact=again)
    assert gate.can_send(contact=again, channel="email", purpose="marketing").reason == "suppressed_soft_bounces"
    Suppression.objects.filter(reason="soft_bounces").update(lifted_at=timezone.now())
    assert gate.can_send(contact=again, channel="email", purpose="marketing").allowed


def test_a_later_esp_event_for_an_erased_address_creates_no_contact(customer):
    from anymail.signals import AnymailTrackingEvent, tracking

    email = customer.email
    privacy.contact_erase(contact=customer, actor="dpo")
    tracking.send(sender=None, esp_name="Postmark", event=AnymailTrackingEvent(
        event_type="bounced", recipient=email, event_id="late-1", esp_event={"Type": "HardBounce"}))
    assert not Contact.objects.exists()
    assert Suppression.objects.active().filter(reason="hard_bounce").count() == 1


def test_an_erased_sms_subscriber_is_not_resubscribed_by_an_import(shop):
    c = make_contact(email=None, phone="+60177778888")
    subscribe(c, "sms")
    privacy.contact_erase(contact=c, actor="dpo")
    again = make_contact(email=None, phone="+60177778888")
    services.consent_statement_receive(contact=again, channel="sms", state="subscribed", source="import",
                                       proof={"consent_text": "old consent"})
    assert gate.can_send(contact=again, channel="sms", purpose="marketing").reason == "suppressed_erased"
