from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from compliance import gate, services
from compliance.models import ConsentSource, ConsentStatus, Preference, SenderPause, SendLog, SuppressionReason
from segments.middleware import forget_shop
from segments.models import Shop
from tests.compliance.conftest import make_contact, subscribe

pytestmark = pytest.mark.django_db
NOON_KL = datetime(2026, 3, 2, 12, 0, tzinfo=ZoneInfo("Asia/Kuala_Lumpur"))


def test_a_subscriber_may_get_marketing_email(contact):
    d = gate.can_send(contact=contact, channel="email", purpose="marketing", topic="promotions", at=NOON_KL)
    assert (d.allowed, d.reason, d.defer_until) == (True, "allowed", None)


def test_no_consent_refuses_marketing_but_not_transactional(shop):
    c = make_contact(email="new@kedai-customer.jp")
    assert gate.can_send(contact=c, channel="email", purpose="marketing").reason == "no_consent"
    assert gate.can_send(contact=c, channel="email", purpose="transactional").allowed


def test_sms_consent_is_never_inferred_from_email_consent(contact):
    assert gate.can_send(contact=contact, channel="email", purpose="marketing", at=NOON_KL).allowed
    assert gate.can_send(contact=contact, channel="sms", purpose="marketing", at=NOON_KL).reason == "no_consent"


def test_unsubscribed_pending_and_missing_address_have_their_own_reasons(shop):
    c = make_contact(email="p@kedai-customer.jp")
    services.consent_record(contact=c, channel="email", status=ConsentStatus.PENDING, source=ConsentSource.FORM)
    assert gate.can_send(contact=c, channel="email", purpose="marketing").reason == "pending_confirmation"
    services.unsubscribe(contact=c, channel="email", source=ConsentSource.ONE_CLICK)
    assert gate.can_send(contact=c, channel="email", purpose="marketing").reason == "unsubscribed"
    assert gate.can_send(contact=c, channel="sms", purpose="transactional").reason == "no_address"


@pytest.mark.parametrize("reason, marketing, transactional_allowed", [
    (SuppressionReason.HARD_BOUNCE, "suppressed_hard_bounce", False),
    (SuppressionReason.INVALID, "suppressed_invalid", False),
    (SuppressionReason.COMPLAINT, "suppressed_complaint", True),
    (SuppressionReason.ERASED, "suppressed_erased", True),
    (SuppressionReason.SOFT_BOUNCES, "suppressed_soft_bounces", True),
    (SuppressionReason.SUNSET, "sunset", True),
])
def test_suppressions_refuse_marketing_and_only_dead_addresses_refuse_transactional(
        contact, reason, marketing, transactional_allowed):
    services.suppress(channel="email", address=" AIKO@Kedai-Customer.JP ", reason=reason)
    assert gate.can_send(contact=contact, channel="email", purpose="marketing", at=NOON_KL).reason == marketing
    assert gate.can_send(contact=contact, channel="email", purpose="transactional").allowed is transactional_allowed


def test_fake_and_role_addresses_are_flagged_at_intake_and_never_get_marketing(shop):
    for email in ("test@test.com", "asdf@asdf.com", "info@kedai-customer.jp", "noreply@kedai-customer.jp"):
        c = make_contact(email=email)
        subscribe(c, source=ConsentSource.FORM)
        d = gate.can_send(contact=c, channel="email", purpose="marketing")
        assert d.reason == "suppressed_suspect_address", email
    broken = make_contact(email="broken@nodomain")
    assert gate.can_send(contact=broken, channel="email", purpose="transactional").reason == "suppressed_invalid"


def test_topics_from_the_preference_center_are_respected(contact):
    Preference.objects.create(contact=contact, topics=["education"], frequency="news")
    assert gate.can_send(contact=contact, channel="email", purpose="marketing", topic="promotions",
                         at=NOON_KL).reason == "topic_opted_out"
    assert gate.can_send(contact=contact, channel="email", purpose="marketing", topic="education", at=NOON_KL).allowed


def test_marketing_email_waits_for_the_postal_address_and_sender_identity(contact):
    Shop.objects.filter(pk=1).update(postal_address="")
    forget_shop()
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "sender_identity_missing"
    assert gate.can_send(contact=contact, channel="email", purpose="transactional").allowed


def test_a_reputation_pause_stops_marketing_only(contact):
    SenderPause.objects.create(channel="email", reason="bounce rate 3% > 2%")
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "sender_paused"
    assert gate.can_send(contact=contact, channel="email", purpose="transactional").allowed


def test_daily_and_weekly_caps_defer_to_when_a_slot_frees(contact):
    t0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    gate.record_sent(contact=contact, channel="email", purpose="marketing", at=t0, message_key="campaign:1")
    d = gate.can_send(contact=contact, channel="email", purpose="marketing", at=t0 + timedelta(hours=3))
    assert (d.allowed, d.reason, d.defer_until) == (False, "frequency_cap", t0 + timedelta(days=1))
    # Transactional sends are not counted and not capped.
    assert gate.can_send(contact=contact, channel="email", purpose="transactional", at=t0 + timedelta(hours=3)).allowed
    gate.record_sent(contact=contact, channel="email", purpose="marketing", at=t0 + timedelta(days=1, hours=1),
                     message_key="campaign:2")
    gate.record_sent(contact=contact, channel="email", purpose="marketing", at=t0 + timedelta(days=2, hours=1),
                     message_key="campaign:3")
    d = gate.can_send(contact=contact, channel="email", purpose="marketing", at=t0 + timedelta(days=3, hours=2))
    assert (d.reason, d.defer_until) == ("frequency_cap", t0 + timedelta(days=7))
    assert gate.can_send(contact=contact, channel="email", purpose="marketing", at=t0 + timedelta(days=7, hours=2)).allowed


def test_a_weekly_frequency_preference_is_stricter_than_the_global_cap(contact):
    Preference.objects.create(contact=contact, topics=["promotions"], frequency="weekly")
    t0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    gate.record_sent(contact=contact, channel="email", purpose="marketing", at=t0, message_key="campaign:1")
    d = gate.can_send(contact=contact, channel="email", purpose="marketing", at=t0 + timedelta(days=2))
    assert (d.reason, d.defer_until) == ("frequency_cap", t0 + timedelta(days=7))


@pytest.mark.parametrize("local_hour, minute, allowed", [(7, 59, False), (8, 0, True), (20, 59, True), (21, 0, False)])
def test_sms_quiet_hours_in_the_contacts_zone_defer_to_8am(contact, local_hour, minute, allowed):
    subscribe(contact, "sms")
    zone = ZoneInfo("Asia/Kuala_Lumpur")
    at = datetime(2026, 3, 2, local_hour, minute, tzinfo=zone)
    d = gate.can_send(contact=contact, channel="sms", purpose="marketing", at=at)
    assert d.allowed is allowed
    if not allowed:
        assert d.reason == "quiet_hours"
        day = 2 if local_hour < 8 else 3
        assert d.defer_until == datetime(2026, 3, day, 8, 0, tzinfo=zone)
        # Shipping notices are transactional: no quiet hours.
        assert gate.can_send(contact=contact, channel="sms", purpose="transactional", at=at).allowed


def test_quiet_hours_follow_dst_in_new_york(shop):
    c = make_contact(email=None, phone="+12125550100", timezone="America/New_York")
    subscribe(c, "sms")
    # 2025-03-09: clocks go forward at 02:00; 12:30 UTC is 08:30 EDT (allowed), 11:30 UTC is 07:30 EDT.
    assert gate.can_send(contact=c, channel="sms", purpose="marketing", at=datetime(2025, 3, 9, 12, 30, tzinfo=UTC)).allowed
    d = gate.can_send(contact=c, channel="sms", purpose="marketing", at=datetime(2025, 3, 9, 11, 30, tzinfo=UTC))
    assert d.reason == "quiet_hours" and d.defer_until == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)


def test_record_sent_is_idempotent_per_message_and_refusals_are_logged(contact):
    a = gate.record_sent(contact=contact, channel="email", purpose="marketing", message_key="campaign:7")
    b = gate.record_sent(contact=contact, channel="email", purpose="marketing", message_key="campaign:7")
    assert a.pk == b.pk
    services.unsubscribe(contact=contact, channel="email", source=ConsentSource.ONE_CLICK)
    d = gate.can_send(contact=contact, channel="email", purpose="marketing")
    row = gate.record_refused(d, message_key="campaign:8")
    assert (row.outcome, row.reason) == ("refused", "unsubscribed")
    assert SendLog.objects.filter(contact=contact).count() == 2


def test_unknown_channel_or_purpose_is_a_programming_error(contact):
    with pytest.raises(ValueError):
        gate.can_send(contact=contact, channel="fax", purpose="marketing")
    with pytest.raises(ValueError):
        gate.can_send(contact=contact, channel="email", purpose="promo")


def test_can_send_command_prints_the_answer_and_reason(contact, capsys):
    call_command("can_send", "AIKO@kedai-customer.jp", "email")
    assert capsys.readouterr().out.strip() == "yes: allowed"
    call_command("can_send", "+60 12-345 6789", "sms", "--purpose", "marketing")
    assert capsys.readouterr().out.strip() == "no: no_consent"
    services.suppress(channel="email", address=contact.email, reason=SuppressionReason.HARD_BOUNCE)
    call_command("can_send", contact.email, "email", "--purpose", "transactional")
    assert capsys.readouterr().out.strip() == "no: suppressed_hard_bounce"


def test_an_email_hard_bounce_does_not_stop_push_but_erasure_does(contact):
    subscribe(contact, "push")
    services.suppress(channel="email", address=contact.email, reason=SuppressionReason.HARD_BOUNCE)
    assert gate.can_send(contact=contact, channel="push", purpose="marketing", at=NOON_KL).allowed
    services.suppress(channel="email", address=contact.email, reason=SuppressionReason.ERASED)
    assert gate.can_send(contact=contact, channel="push", purpose="marketing", at=NOON_KL).reason == "suppressed_erased"


def test_staff_can_add_a_suppression_in_the_admin(contact, staff_client):
    r = staff_client.post("/admin/compliance/suppression/add/",
                          {"channel": "email", "address": "Aiko@kedai-customer.jp", "reason": "manual", "detail": ""})
    assert r.status_code == 302
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "suppressed_manual"
    assert gate.can_send(contact=contact, channel="email", purpose="transactional").allowed


def test_a_statement_with_a_garbage_ip_keeps_the_consent_without_it(shop):
    c = make_contact(email="ipless@kedai-customer.jp")
    services.consent_statement_receive(contact=c, channel="email", state="subscribed", source="import",
                                       proof={"ip": "unknown", "consent_text": "Yes"})
    assert services.consent_status(c, "email") == "subscribed"
