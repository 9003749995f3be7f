"""The sending rate limit (channels.throttle): one row per channel that all workers reserve slots on.

The clock here is a fake one that only moves when a worker sleeps, so what is checked is exactly when
each message would be handed over; the benchmark (bench b4 --throttle) measures the real rate."""

import pytest

from channels import throttle
from channels.models import Message, MessageStatus, SendRateLimit
from channels.services import message_create, messages_enqueue, messages_send
from segments.models import Contact

pytestmark = pytest.mark.django_db


class FakeTime:
    def __init__(self, now: float = 1_000.0):
        self.now, self.sleeps = now, []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeTime()
    monkeypatch.setattr(throttle, "time", fake)
    return fake


def test_without_a_limit_nothing_waits_and_no_row_is_written(clock):
    pacer = throttle.Pacer("email", 500)
    for _ in range(500):
        pacer.wait()
    assert clock.sleeps == [] and not SendRateLimit.objects.exists()


def test_two_workers_together_keep_to_the_rate(clock):
    SendRateLimit.objects.create(channel="sms", per_second=2)
    a, b = throttle.Pacer("sms", 4), throttle.Pacer("sms", 4)
    handed_over = []
    for _ in range(4):  # the two batches take turns, as two workers would
        for worker, pacer in (("a", a), ("b", b)):
            pacer.wait()
            handed_over.append((worker, clock.now))
    times = [t for _w, t in handed_over]
    assert times == [1000.0 + 0.5 * i for i in range(8)]  # one every half second, never two at once
    assert SendRateLimit.objects.get(channel="sms").next_slot == 1004.0


def test_a_batch_reserves_slots_in_blocks_and_waits_for_each(clock):
    SendRateLimit.objects.create(channel="email", per_second=5)
    pacer = throttle.Pacer("email", 6)
    for _ in range(6):
        pacer.wait()
    assert clock.sleeps == [0.2] * 5  # 6 messages at 5/s: the first at once, then one every 0.2 s
    # Blocks of half a second (3 slots): two reservations, the row moved past the sixth slot.
    assert SendRateLimit.objects.get(channel="email").next_slot == pytest.approx(1001.2)


def test_an_idle_limit_does_not_bank_slots_for_a_burst(clock):
    SendRateLimit.objects.create(channel="email", per_second=10, next_slot=900.0)  # last used long ago
    pacer = throttle.Pacer("email", 3)
    for _ in range(3):
        pacer.wait()
    assert clock.sleeps == [0.1, 0.1]


def test_the_rate_set_in_the_settings_becomes_the_admins_row(clock, settings):
    settings.CHANNELS = {**settings.CHANNELS, "RATE_LIMITS": {"email": 14.0}}
    assert throttle.rate_for("email") == 14.0
    SendRateLimit.objects.filter(channel="email").update(per_second=3)  # staff changed it in the admin
    assert throttle.rate_for("email") == 3
    assert throttle.rate_for("sms") is None


def test_delivery_tasks_stay_short_under_a_slow_limit(clock, monkeypatch, django_capture_on_commit_callbacks):
    SendRateLimit.objects.create(channel="sms", per_second=0.5)
    queued = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda name, ids: queued.append(ids))
    with django_capture_on_commit_callbacks(execute=True):
        messages_enqueue(list(range(1, 101)))
    assert [len(ids) for ids in queued] == [15] * 6 + [10]  # 30 s of sending per task at 0.5/s


def test_sending_hands_each_message_over_at_its_slot(clock, smtp_sink, cart_template, shop):
    SendRateLimit.objects.create(channel="email", per_second=4)
    ids = []
    for i in range(5):
        contact = Contact.objects.create(email=f"buyer{i}@pelanggan.my", first_name="Ana")
        message, _ = message_create(contact=contact, template=cart_template, idempotency_key=f"receipt:{i}",
                                    purpose="transactional")
        ids.append(message.pk)
    messages_send(ids)
    assert list(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == [MessageStatus.SENT] * 5
    assert len(smtp_sink.messages) == 5
    assert clock.sleeps == [0.25] * 4


def test_staff_change_the_rate_in_the_admin_without_undoing_the_workers_reservations(staff_client):
    from django.urls import reverse

    row = SendRateLimit.objects.create(channel="email", per_second=14)
    form = staff_client.get(reverse("admin:channels_sendratelimit_change", args=[row.pk]))
    assert form.status_code == 200
    SendRateLimit.objects.filter(pk=row.pk).update(next_slot=5_000.0)  # a worker reserved meanwhile
    response = staff_client.post(reverse("admin:channels_sendratelimit_change", args=[row.pk]),
                                 {"channel": "email", "per_second": "1"})
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.per_second, row.next_slot) == (1.0, 5_000.0)
    refused = staff_client.post(reverse("admin:channels_sendratelimit_add"), {"channel": "sms", "per_second": "0"})
    assert refused.status_code == 200 and not SendRateLimit.objects.filter(channel="sms").exists()
