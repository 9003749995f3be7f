"""Segments can select on consent; a consent change moves the person in or out at once."""

import pytest

from compliance import services
from compliance.models import ConsentSource
from segments import rules as engine
from segments.membership import segment_matches, segment_queryset, segment_refresh
from segments.models import Contact, Event, Segment, SegmentMembership

pytestmark = pytest.mark.django_db(transaction=True)  # the refresh runs on commit, as in production


def test_consent_rules_agree_in_sql_and_python_and_move_on_change(shop):
    aiko = Contact.objects.create(email="aiko@pelanggan.jp")
    ben = Contact.objects.create(email="ben@pelanggan.my", phone="+60123456780")
    services.consent_record(contact=aiko, channel="email", status="subscribed", source=ConsentSource.ADMIN,
                            consent_text="yes", actor="t")
    emailable = Segment.objects.create(name="Emailable", rules=engine.validate(
        {"all": [{"kind": "consent", "channel": "email", "state": "subscribed"}]}))
    never_sms = Segment.objects.create(name="Never asked for SMS", rules=engine.validate(
        {"kind": "consent", "channel": "sms", "state": "never_asked"}))
    for segment in (emailable, never_sms):
        segment_refresh(segment=segment)
        in_sql = set(segment_queryset(segment.rules).values_list("pk", flat=True))
        in_python = {c.pk for c in (aiko, ben) if segment_matches(segment=segment, contact=c)}
        assert in_sql == in_python
    assert set(segment_queryset(emailable.rules).values_list("pk", flat=True)) == {aiko.pk}
    assert set(segment_queryset(never_sms.rules).values_list("pk", flat=True)) == {aiko.pk, ben.pk}

    services.unsubscribe(contact=aiko, channel="email", source=ConsentSource.ONE_CLICK)
    assert not SegmentMembership.objects.current().filter(segment=emailable).exists()
    assert Event.objects.filter(contact=aiko, type="segment_exited", properties__segment=emailable.pk).exists()


@pytest.mark.parametrize("rule", [{"kind": "consent", "channel": "fax"},
                                  {"kind": "consent", "channel": "email", "state": "maybe"},
                                  {"kind": "consent", "channel": "email", "colour": "red"}])
def test_bad_consent_rules_are_refused_with_a_clear_message(rule):
    with pytest.raises(engine.RuleError, match="consent"):
        engine.validate(rule)
