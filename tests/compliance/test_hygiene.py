from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django_q.models import Schedule

from compliance import gate, hygiene, services
from compliance.models import EspEvent, SenderPause, SendLog, SunsetEntry
from compliance.signals import sunset_entered
from segments.models import Event
from tests.compliance.conftest import make_contact, subscribe

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def subscribed_at(contact, when):
    """Back-date the subscription (the clock of the sunset rule starts there)."""
    contact.consents.filter(channel="email").update(changed_at=when)


def test_sunset_enters_after_n_silent_days_then_suppresses_after_the_grace_period(shop, settings,
                                                                                 django_capture_on_commit_callbacks):
    settings.COMPLIANCE = {**settings.COMPLIANCE, "SUNSET_DAYS": 120, "SUNSET_GRACE_DAYS": 30}
    quiet, active = make_contact(email="quiet@kedai-customer.jp"), make_contact(email="active@kedai-customer.jp")
    for c in (quiet, active):
        subscribe(c)
        subscribed_at(c, T0)
    Event.objects.create(contact=active, type="email_clicked", occurred_at=T0 + timedelta(days=100))
    received = []
    sunset_entered.connect(lambda sender, contact_ids, **kw: received.extend(contact_ids), weak=False,
                           dispatch_uid="test-sunset")
    try:
        assert hygiene.sunset_sweep(T0 + timedelta(days=119))["entered"] == 0
        with django_capture_on_commit_callbacks(execute=True):
            result = hygiene.sunset_sweep(T0 + timedelta(days=121))
    finally:
        sunset_entered.disconnect(dispatch_uid="test-sunset")
    assert result == {"entered": 1, "exited": 0, "suppressed": 0} and received == [quiet.pk]
    # In the segment, the re-engagement message may still go.
    assert gate.can_send(contact=quiet, channel="email", purpose="marketing").allowed
    assert hygiene.sunset_sweep(T0 + timedelta(days=152))["suppressed"] == 1
    assert gate.can_send(contact=quiet, channel="email", purpose="marketing").reason == "sunset"
    assert gate.can_send(contact=quiet, channel="email", purpose="transactional").allowed
    assert hygiene.sunset_sweep(T0 + timedelta(days=153))["suppressed"] == 0  # idempotent


def test_engagement_during_or_after_sunset_brings_the_contact_back(shop):
    c = make_contact(email="back@kedai-customer.jp")
    subscribe(c)
    subscribed_at(c, T0)
    hygiene.sunset_sweep(T0 + timedelta(days=121))
    hygiene.sunset_sweep(T0 + timedelta(days=152))
    assert gate.can_send(contact=c, channel="email", purpose="marketing").reason == "sunset"
    EspEvent.objects.create(esp="Postmark", event_key="open-1", event_type="opened", kind="opened",
                            recipient=c.email, occurred_at=T0 + timedelta(days=160))
    assert hygiene.sunset_sweep(T0 + timedelta(days=161))["exited"] == 1
    assert not SunsetEntry.objects.exists()
    assert gate.can_send(contact=c, channel="email", purpose="marketing").allowed


def make_sends(n, at):
    contact = make_contact(email="volume@kedai-customer.jp")
    SendLog.objects.bulk_create([SendLog(contact=contact, channel="email", purpose="marketing",
                                         message_key=f"campaign:{i}", outcome="sent", reason="allowed", at=at)
                                 for i in range(n)])


def add_events(kind, n, at):
    EspEvent.objects.bulk_create([EspEvent(esp="Postmark", event_key=f"{kind}-{i}", event_type="x", kind=kind,
                                           recipient=f"r{i}@kedai-customer.jp", occurred_at=at) for i in range(n)])


def test_reputation_guard_pauses_marketing_when_bounces_cross_two_percent(contact, staff_client):
    now = datetime.now(UTC)
    make_sends(1000, now - timedelta(days=1))
    add_events("hard_bounce", 20, now - timedelta(hours=5))
    assert hygiene.reputation_check() is None  # 2.0% is not above 2%
    add_events("invalid", 1, now - timedelta(hours=4))
    pause = hygiene.reputation_check()
    assert pause and "bounce rate 2.10%" in pause.reason
    assert hygiene.reputation_check().pk == pause.pk  # one pause, not one per run
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").reason == "sender_paused"
    page = staff_client.get("/admin/")
    assert b"paused to protect your sender reputation" in page.content
    hygiene.sender_resume(pause=pause, by="admin")
    assert gate.can_send(contact=contact, channel="email", purpose="marketing").allowed


def test_reputation_guard_watches_complaints_and_ignores_tiny_volumes(contact, settings):
    now = datetime.now(UTC)
    make_sends(50, now - timedelta(days=1))
    add_events("complaint", 5, now - timedelta(hours=1))
    assert hygiene.reputation_check() is None  # 50 sends is below REPUTATION_MIN_SENDS
    make_sends_more = [SendLog(contact=None, channel="email", purpose="marketing", message_key=f"m{i}",
                               outcome="sent", reason="allowed", at=now - timedelta(days=2)) for i in range(1950)]
    SendLog.objects.bulk_create(make_sends_more)
    pause = hygiene.reputation_check()
    assert pause and "complaint rate 0.25%" in pause.reason
    assert SenderPause.objects.filter(resumed_at__isnull=True).count() == 1


def test_old_events_fall_out_of_the_rolling_window(contact):
    now = datetime.now(UTC)
    make_sends(1000, now - timedelta(days=1))
    add_events("hard_bounce", 100, now - timedelta(days=30))
    assert hygiene.reputation_check() is None


def test_schedules_are_created_once(db, capsys):
    call_command("compliance_schedules")
    call_command("compliance_schedules")
    rows = Schedule.objects.filter(name__startswith="compliance:")
    assert sorted(rows.values_list("func", flat=True)) == ["compliance.tasks.reputation_check",
                                                           "compliance.tasks.sunset_sweep"]
    assert "0 new" in capsys.readouterr().out.strip().splitlines()[-1]


def test_the_scheduled_functions_run(shop):
    from compliance import tasks

    assert tasks.sunset_sweep() == {"entered": 0, "exited": 0, "suppressed": 0}
    assert tasks.reputation_check() == "ok"


def test_compliance_admin_pages_render(contact, staff_client):
    services.unsubscribe(contact=contact, channel="email", source="one_click")
    for model in ("consentevent", "consent", "suppression", "sendlog", "espevent", "senderpause", "sunsetentry",
                  "erasurerecord", "unsubscribefeedback", "preference"):
        assert staff_client.get(f"/admin/compliance/{model}/").status_code == 200, model
    page = staff_client.get(f"/admin/segments/contact/{contact.pk}/change/")
    assert b"timeline-consent" in page.content and b"no: unsubscribed" in page.content
