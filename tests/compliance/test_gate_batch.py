"""The batch gate (one query per kind of fact) answers exactly as the single-contact gate."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from compliance import gate, services
from compliance.models import ConsentSource, ConsentStatus, SenderPause, SendLog, SuppressionReason
from segments.models import Contact

pytestmark = pytest.mark.django_db


def _population(rnd: random.Random) -> list[Contact]:
    contacts = []
    for i in range(60):
        email = f"p{i}@pelanggan.my" if rnd.random() < 0.9 else None
        phone = f"+6012{i:07d}" if rnd.random() < 0.6 or not email else None
        c = Contact.objects.create(email=email, phone=phone,
                                   timezone=rnd.choice(["", "Asia/Tokyo", "America/New_York"]))
        for channel in ("email", "sms", "push"):
            status = rnd.choice([None, ConsentStatus.SUBSCRIBED, ConsentStatus.SUBSCRIBED, ConsentStatus.UNSUBSCRIBED,
                                 ConsentStatus.PENDING])
            if status:
                services.consent_record(contact=c, channel=channel, status=status, source=ConsentSource.ADMIN,
                                        consent_text="yes please", actor="test")
        if rnd.random() < 0.25 and c.email:
            services.suppress(channel="email", address=c.email, contact=c,
                              reason=rnd.choice([SuppressionReason.HARD_BOUNCE, SuppressionReason.COMPLAINT,
                                                 SuppressionReason.SOFT_BOUNCES, SuppressionReason.SUNSET]))
        if rnd.random() < 0.3:
            services.preferences_update(contact=c, channels={}, topics=rnd.sample(["promotions", "education"], 1),
                                        frequency=rnd.choice(["news", "weekly", "monthly"]), consent_texts={})
        for _ in range(rnd.choice([0, 0, 1, 2, 4])):
            SendLog.objects.create(contact=c, channel=rnd.choice(["email", "sms"]), purpose="marketing",
                                   message_key=f"m{rnd.getrandbits(32)}", outcome="sent", reason="allowed",
                                   at=timezone.now() - timedelta(hours=rnd.randint(1, 24 * 20)))
        contacts.append(c)
    return contacts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_and_single_decisions_agree(shop, seed, django_assert_max_num_queries):
    rnd = random.Random(seed)
    contacts = _population(rnd)
    if seed == 3:
        SenderPause.objects.create(channel="email", reason="test", bounce_rate=0.05, complaint_rate=0)
    at = timezone.now()
    for channel in ("email", "sms", "push"):
        for purpose in ("marketing", "transactional"):
            for topic in (None, "promotions", "education"):
                with django_assert_max_num_queries(6):
                    batch = gate.can_send_many(contacts=contacts, channel=channel, purpose=purpose, topic=topic, at=at)
                single = [gate.can_send(contact=c, channel=channel, purpose=purpose, topic=topic, at=at)
                          for c in contacts]
                assert batch == single, (channel, purpose, topic)
    reasons = {d.reason for c in ("email", "sms") for d in gate.can_send_many(contacts=contacts, channel=c,
                                                                              purpose="marketing", at=at)}
    assert len(reasons) >= 4  # the population really exercises several rules


def test_a_send_noted_during_a_batch_counts_against_the_cap(shop, settings):
    settings.COMPLIANCE = {**settings.COMPLIANCE, "CAPS": {**settings.COMPLIANCE["CAPS"], "email": {"day": 1, "week": 3}}}
    c = Contact.objects.create(email="cap@pelanggan.my")
    services.consent_record(contact=c, channel="email", status="subscribed", source=ConsentSource.ADMIN,
                            consent_text="yes", actor="t")
    facts = gate.gate_facts(contacts=[c], channel="email")
    assert gate.can_send(contact=c, channel="email", purpose="marketing", facts=facts).allowed
    facts.note_sent(c, facts.at)
    second = gate.can_send(contact=c, channel="email", purpose="marketing", facts=facts)
    assert second.reason == "frequency_cap" and second.defer_until


def test_record_sent_many_writes_each_row_once_with_every_field(shop):
    from datetime import UTC, datetime

    from compliance.models import SendLog
    from segments.models import Contact

    a, b = Contact.objects.create(email="a@x.example"), Contact.objects.create(email="b@x.example")
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    rows = [(a.pk, "campaign:1:a"), (b.pk, "campaign:1:b")]
    gate.record_sent_many(contact_ids_and_keys=rows, channel="email", purpose="marketing", topic="news", at=at)
    gate.record_sent_many(contact_ids_and_keys=[*rows, (a.pk, "campaign:2:a")], channel="email",
                          purpose="marketing", at=at)  # a retried flush: the first two are skipped
    got = sorted(SendLog.objects.values_list("contact_id", "channel", "purpose", "topic", "message_key", "outcome",
                                             "reason", "at"))
    assert got == sorted([(a.pk, "email", "marketing", "news", "campaign:1:a", "sent", "allowed", at),
                          (b.pk, "email", "marketing", "news", "campaign:1:b", "sent", "allowed", at),
                          (a.pk, "email", "marketing", "", "campaign:2:a", "sent", "allowed", at)])
