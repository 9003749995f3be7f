import csv
import hashlib
import io
import json

import pytest
from django.urls import reverse

from segments.models import Contact, ContactScore, Segment, SegmentMembership
from segments.services import SegmentInUse, segment_delete
from tests.segments.conftest import add_event

pytestmark = pytest.mark.django_db

KITCHEN_BROWSERS = {"all": [
    {"kind": "event_count", "type": "product_viewed", "where": {"category": "Kitchen"}, "op": "gte", "value": 3,
     "days": 7},
    {"kind": "field", "field": "orders_count", "op": "eq", "value": 0},
]}


@pytest.fixture
def browsers(db):
    keen = Contact.objects.create(email="  Keen.Cook@Example.com ", first_name="Keen")
    casual = Contact.objects.create(email="casual@example.com")
    for _ in range(3):
        add_event(keen, "product_viewed", days_ago=1, category="Kitchen")
    add_event(casual, "product_viewed", days_ago=1, category="Kitchen")
    return keen, casual


def _add(client, rules, name="Kitchen browsers"):
    return client.post(reverse("admin:segments_segment_add"),
                       {"name": name, "description": "", "rules": json.dumps(rules), "is_active": "on"})


def test_owner_builds_a_segment_and_members_are_recorded(staff_client, browsers):
    keen, _casual = browsers
    response = _add(staff_client, KITCHEN_BROWSERS)
    assert response.status_code == 302, response.content.decode()[:2000]
    segment = Segment.objects.get(name="Kitchen browsers")
    assert segment.member_count == 1
    assert list(SegmentMembership.objects.current().filter(segment=segment).values_list("contact", flat=True)) \
        == [keen.pk]
    page = staff_client.get(reverse("admin:segments_segment_change", args=[segment.pk]))
    assert page.status_code == 200
    assert b"segment-preview" in page.content and b"full evaluation" in page.content


@pytest.mark.parametrize(("rules", "message"), [
    ({"kind": "field", "field": "emial", "op": "eq", "value": "x"}, "unknown field 'emial'"),
    ({"kind": "field", "field": "orders_count", "op": "gte", "value": "three"}, "must be a whole number"),
    ({"kind": "event_count", "type": "product_viewed", "op": "gte", "value": 3, "days": "week"},
     "days must be a whole number"),
    ({"kind": "teleported"}, "unknown condition kind 'teleported'"),
    ({"all": []}, "needs a non-empty list"),
])
def test_bad_rules_are_refused_with_a_clear_message(staff_client, rules, message):
    response = _add(staff_client, rules)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["rules"]
    assert any(message in e for e in errors), errors
    assert not Segment.objects.exists()


def test_a_cycle_of_segments_is_refused(staff_client, browsers):
    a = Segment.objects.create(name="A", rules={"kind": "tag", "tag": "x"})
    b = Segment.objects.create(name="B", rules={"kind": "segment", "segment": a.pk})
    response = staff_client.post(reverse("admin:segments_segment_change", args=[a.pk]),
                                 {"name": "A", "rules": json.dumps({"kind": "segment", "segment": b.pk}),
                                  "is_active": "on"})
    assert response.status_code == 200
    assert "cycle: A -> B -> A" in response.context["adminform"].form.errors["rules"][0]
    a.refresh_from_db()
    assert a.rules == {"kind": "tag", "tag": "x"}


def test_a_segment_another_segment_uses_cannot_be_deleted(staff_client):
    a = Segment.objects.create(name="Wholesale", rules={"kind": "tag", "tag": "wholesale"})
    b = Segment.objects.create(name="Retail", rules={"not": {"kind": "segment", "segment": a.pk}})
    page = staff_client.get(reverse("admin:segments_segment_delete", args=[a.pk]))
    assert "segment “Retail”, whose rule uses “Wholesale”" in page.content.decode()
    assert page.context["protected"]
    staff_client.post(reverse("admin:segments_segment_delete", args=[a.pk]), {"post": "yes"})
    bulk = staff_client.post(reverse("admin:segments_segment_changelist"),
                             {"action": "delete_selected", "_selected_action": [a.pk], "post": "yes"})
    assert "whose rule uses “Wholesale”" in bulk.content.decode()
    assert Segment.objects.filter(pk=a.pk).exists()
    with pytest.raises(SegmentInUse, match="“Wholesale” cannot be deleted: the rule of “Retail” uses it"):
        segment_delete(segment=a)
    # Deleted together with the segment that uses it, or after that rule changed: fine.
    staff_client.post(reverse("admin:segments_segment_changelist"),
                      {"action": "delete_selected", "_selected_action": [a.pk, b.pk], "post": "yes"})
    assert not Segment.objects.filter(pk__in=[a.pk, b.pk]).exists()
    c = Segment.objects.create(name="C", rules={"kind": "tag", "tag": "x"})
    d = Segment.objects.create(name="D", rules={"kind": "segment", "segment": c.pk})
    Segment.objects.filter(pk=d.pk).update(rules={"kind": "tag", "tag": "y"})
    segment_delete(segment=c)
    assert not Segment.objects.filter(pk=c.pk).exists()


def test_preview_counts_members_without_saving(staff_client, browsers):
    url = reverse("admin:segments_segment_preview")
    ok = staff_client.post(url, {"rules": json.dumps(KITCHEN_BROWSERS)})
    assert ok.json() == {"count": 1}
    looser = {**KITCHEN_BROWSERS, "all": [{**KITCHEN_BROWSERS["all"][0], "value": 1}]}
    assert staff_client.post(url, {"rules": json.dumps(looser)}).json() == {"count": 2}
    bad = staff_client.post(url, {"rules": json.dumps({"kind": "field", "field": "nope", "op": "eq"})})
    assert bad.status_code == 400 and "unknown field 'nope'" in bad.json()["error"]
    assert not Segment.objects.exists()


def _csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_members_export_as_csv_and_as_hashed_emails(staff_client, browsers):
    keen, _ = browsers
    _add(staff_client, KITCHEN_BROWSERS)
    segment = Segment.objects.get()
    rows = _csv(staff_client.get(reverse("admin:segments_segment_export", args=[segment.pk])))
    assert rows[0][:2] == ["contact_id", "email"]
    assert rows[1][:3] == [str(keen.pk), "keen.cook@example.com", ""]
    assert len(rows) == 2
    hashed = _csv(staff_client.get(reverse("admin:segments_segment_export_hashed", args=[segment.pk])))
    assert hashed[0] == ["email_sha256", "phone_sha256"]
    assert hashed[1][0] == hashlib.sha256(b"keen.cook@example.com").hexdigest()
    assert len(hashed) == 2


def test_member_list_and_contact_page_show_segments(staff_client, browsers):
    keen, casual = browsers
    _add(staff_client, KITCHEN_BROWSERS)
    segment = Segment.objects.get()
    listing = staff_client.get(reverse("admin:segments_contact_changelist") + f"?segment={segment.pk}")
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 1
    ContactScore.objects.create(contact=keen, rfm_recency=5, rfm_frequency=1, rfm_monetary=2, p_alive=0.8)
    detail = staff_client.get(reverse("admin:segments_contact_change", args=[keen.pk]))
    assert b"Kitchen browsers" in detail.content
    assert b"RFM and predicted figures" in detail.content and b"512" in detail.content
