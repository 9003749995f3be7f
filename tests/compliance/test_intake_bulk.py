"""Contacts created in bulk (an import chunk, the events API) get the same intake check as one saved
through the ORM: a fake or role address is suppressed and never gets marketing, whatever its consent."""

import json

import pytest
from django.core.management import call_command

from compliance import gate
from compliance.models import Suppression
from segments.models import ApiKey, Contact

pytestmark = pytest.mark.django_db

HEADER = "email,first_name,last_name,phone,country,locale,email_consent,sms_consent,consent_at\n"


def test_an_imported_role_or_fake_address_is_suppressed_even_with_consent(shop, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text(HEADER + "".join(f"{e},A,B,,MY,en,yes,,2024-05-01T10:00:00Z\n" for e in (
        "info@kedai-customer.my", "Test@Test.com", "noreply+shop@kedai-customer.my", "asdf1@kedai-customer.my",
        "siti@kedai-customer.my")))
    call_command("import_contacts", str(path))

    flagged = set(Suppression.objects.filter(reason="suspect", lifted_at=None).values_list("address", flat=True))
    assert flagged == {"info@kedai-customer.my", "test@test.com", "noreply+shop@kedai-customer.my",
                       "asdf1@kedai-customer.my"}
    assert Suppression.objects.get(address="info@kedai-customer.my").contact == Contact.objects.get(
        email="info@kedai-customer.my")
    for c in Contact.objects.all():
        decision = gate.can_send(contact=c, channel="email", purpose="marketing")
        if c.email == "siti@kedai-customer.my":
            assert decision.reason != "suppressed_suspect_address"
        else:
            assert decision.reason == "suppressed_suspect_address", c.email

    call_command("import_contacts", str(path))  # re-importing adds nothing
    assert Suppression.objects.filter(reason="suspect").count() == 4


def test_a_role_address_first_seen_by_the_events_api_is_suppressed(shop, client):
    _row, raw = ApiKey.issue(name="shop")
    body = [{"type": "product_viewed", "email": "sales@kedai-customer.my"},
            {"type": "product_viewed", "email": "mei@kedai-customer.my"}]
    response = client.post("/api/v1/events", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 202, response.content
    assert list(Suppression.objects.filter(reason="suspect").values_list("address", flat=True)) == [
        "sales@kedai-customer.my"]
    assert not Suppression.objects.filter(address="mei@kedai-customer.my").exists()
