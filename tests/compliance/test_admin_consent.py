"""Staff record consent a person gave them directly (the contact list's action), within the gate's rules."""

import pytest
from django.contrib.auth.models import Permission

from compliance import gate, services
from compliance.models import ConsentEvent, ConsentSource, SuppressionReason
from segments.models import Contact

pytestmark = pytest.mark.django_db
URL = "/admin/segments/contact/"
TEXT = "Yes, text me offers from Kedai Demo. Msg&data rates may apply. Reply STOP to opt out."


def _post(client, contacts, **fields):
    data = {"action": "record_consent", "_selected_action": [c.pk for c in contacts], "apply": "1",
            "channel": "sms", "consent_text": TEXT, "how": "signed paper form at the Bangsar market stall",
            "obtained_on": "2026-11-20", "reference": "forms/2026-11-20/scan-014.pdf", **fields}
    return client.post(URL, data, follow=True)


def test_staff_record_consent_given_in_person_with_its_proof(staff_client, shop):
    ana = Contact.objects.create(email="ana@kedai-customer.my", phone="+60123000111")
    page = staff_client.post(URL, {"action": "record_consent", "_selected_action": [ana.pk]})
    assert page.status_code == 200 and b"record-consent-form" in page.content

    response = _post(staff_client, [ana])
    assert response.status_code == 200
    assert services.consent_status(ana, "sms") == "subscribed"
    event = ConsentEvent.objects.get(contact=ana, channel="sms")
    assert (event.source, event.actor, event.accepted, event.consent_text) == ("admin", "admin", True, TEXT)
    assert event.proof == {"how": "signed paper form at the Bangsar market stall",
                           "reference": "forms/2026-11-20/scan-014.pdf", "recorded_by": "admin"}
    assert event.occurred_at.date().isoformat() == "2026-11-20"


def test_staff_cannot_resubscribe_someone_who_unsubscribed_or_bounced(staff_client, shop):
    gone = Contact.objects.create(email="gone@kedai-customer.my", phone="+60123000222")
    services.unsubscribe(contact=gone, channel="sms", source=ConsentSource.SMS_KEYWORD)
    bounced = Contact.objects.create(email="bounced@kedai-customer.my")
    services.suppress(channel="email", address=bounced.email, reason=SuppressionReason.HARD_BOUNCE, contact=bounced)

    response = _post(staff_client, [gone])
    assert "only the person can resubscribe" in response.content.decode()
    assert services.consent_status(gone, "sms") == "unsubscribed"
    _post(staff_client, [bounced], channel="email", consent_text="Email me offers")
    assert gate.can_send(contact=bounced, channel="email", purpose="marketing").allowed is False


def test_the_form_refuses_missing_wording_and_future_dates(staff_client, shop):
    ana = Contact.objects.create(email="ana@kedai-customer.my")
    response = _post(staff_client, [ana], consent_text="", obtained_on="2999-01-01")
    assert response.status_code == 200 and b"record-consent-form" in response.content
    assert b"Consent cannot be given in the future" in response.content
    assert not ConsentEvent.objects.filter(contact=ana).exists()


def test_only_staff_allowed_to_add_consent_records_see_the_action(client, django_user_model, shop):
    clerk = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_contact", "change_contact"]))
    client.force_login(clerk)
    ana = Contact.objects.create(email="ana@kedai-customer.my", phone="+60123000333")
    listing = client.get(URL)
    assert listing.status_code == 200 and b"record_consent" not in listing.content
    _post(client, [ana])
    assert not ConsentEvent.objects.filter(contact=ana).exists()
    clerk.user_permissions.add(Permission.objects.get(codename="add_consentevent"))
    clerk = django_user_model.objects.get(pk=clerk.pk)  # fresh permission cache
    client.force_login(clerk)
    assert b"record_consent" in client.get(URL).content
    _post(client, [ana])
    assert services.consent_status(ana, "sms") == "subscribed"
