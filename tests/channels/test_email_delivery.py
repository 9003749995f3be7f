"""Email end to end through a real SMTP server on localhost, read back and checked."""

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils.crypto import salted_hmac

from channels import tracking
from channels.models import Message, MessageStatus
from channels.services import message_create, messages_send
from compliance import messaging
from compliance import services as compliance
from compliance.models import SendLog
from segments.models import Event
from tests.channels.conftest import signed_links

pytestmark = pytest.mark.django_db


def _send(contact, template, key="flow:1/step:1/run:1", **kw):
    message, _ = message_create(contact=contact, template=template, idempotency_key=key, origin="cart_abandonment/1", **kw)
    messages_send([message.pk])
    message.refresh_from_db()
    return message


def _parts(msg):
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_a_personalised_marketing_email_arrives_complete(smtp_sink, siti, cart_template):
    message = _send(siti, cart_template)
    assert message.status == MessageStatus.SENT, message.error
    assert len(smtp_sink.messages) == 1
    msg = smtp_sink.messages[0]
    assert msg["Subject"] == "Siti, your cart is waiting"
    assert msg["To"] == "siti@pelanggan.my"
    assert "Kedai Demo" in msg["From"] and "hello@kedai.example" in msg["From"]
    assert msg.get_content_type() == "multipart/alternative"
    # RFC 8058 one-click pair on every marketing email.
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.search(r"<https?://[^>]+/u/[^>]+>", msg["List-Unsubscribe"])
    assert msg["Message-ID"] and message.provider_message_id == msg["Message-ID"]
    # Stable per Message: its id and salted_hmac("channels.message-id", id) (settlement matches on it).
    mark = salted_hmac("channels.message-id", str(message.pk)).hexdigest()[:16]
    assert msg["Message-ID"].startswith(f"<m{message.pk}.{mark}@")
    text, html = _parts(msg)
    # Personalisation: cart contents with images and the checkout link, a conditional block, points.
    assert "Carbon Steel Wok × 1 — RM89.00" in text
    assert "https://kedai.example/i/wok.jpg" in html
    assert 'id="apparel"' in html and "Points: 120" in text
    # CSS inlined into the elements; no <style> block left behind.
    assert re.search(r'<a [^>]*class="btn"[^>]*style="[^"]*background:\s*#c0392b', html)
    assert "<style" not in html
    # The preheader is hidden at the top; the footer carries the address and unsubscribe link.
    assert "Your Carbon Steel Wok is still in your cart" in html
    assert "Jalan Ampang" in html and "Jalan Ampang" in text
    # The footer links are this contact's own signed unsubscribe and preference links.
    assert signed_links(text) == {"unsubscribe": {siti.pk}, "preferences": {siti.pk}}
    assert signed_links(html) == {"unsubscribe": {siti.pk}, "preferences": {siti.pk}}
    head, _, tail = messaging.unsubscribe_url(siti).partition("/u/")
    assert re.search(rf'href="{re.escape(head)}/u/[^"]+/"', html)
    # Every outside link goes through the signed click redirect; shop links got UTM parameters.
    hrefs = re.findall(r'href="([^"]+)"', html)
    tracked = [h for h in hrefs if "/c/" in h]
    assert len(tracked) == 2 and len(message.links) == 2
    checkout = urlsplit(message.links[0])
    assert checkout.netloc == "kedai.example"
    assert parse_qs(checkout.query) == {"utm_source": ["shop_automation"], "utm_medium": ["email"],
                                         "utm_campaign": ["cart_abandonment"], "utm_content": ["cart-reminder-1"]}
    assert message.links[1] == "https://maps.example.com/store"  # not the shop's site: no UTM
    # An open pixel, and the plain-text part was generated from the HTML with the links in it.
    assert re.search(r'<img [^>]*src="[^"]+/o/[^"]+\.gif"', html)
    assert "/c/" in text
    # The gate recorded the send; caps will count it.
    assert SendLog.objects.filter(contact=siti, outcome="sent", message_key=message.idempotency_key).count() == 1


def test_the_same_step_never_sends_twice(smtp_sink, siti, cart_template):
    first = _send(siti, cart_template, key="wf:7/step:3/run:99")
    again, created = message_create(contact=siti, template=cart_template, idempotency_key="wf:7/step:3/run:99")
    assert not created and again.pk == first.pk
    messages_send([first.pk])  # a redelivered task
    messages_send([first.pk, first.pk])
    assert len(smtp_sink.messages) == 1
    assert Message.objects.count() == 1


def test_an_unsubscribed_contact_gets_nothing_and_the_refusal_is_recorded(smtp_sink, siti, cart_template):
    compliance.unsubscribe(contact=siti, channel="email", source="one_click")
    message = _send(siti, cart_template)
    assert message.status == MessageStatus.REFUSED and message.gate_reason == "unsubscribed"
    assert smtp_sink.messages == []
    assert SendLog.objects.get(message_key=message.idempotency_key).outcome == "refused"


def test_a_worker_killed_mid_send_never_causes_a_duplicate_marketing_email(smtp_sink, siti, cart_template):
    from datetime import timedelta

    from django.utils import timezone

    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="k-dead")
    # As left by a worker that was SIGKILLed after marking it sending, before it could mark it sent.
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENDING, claim="dead",
                                                 claimed_at=timezone.now() - timedelta(hours=1))
    messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.UNKNOWN
    assert smtp_sink.messages == []


def test_an_interrupted_transactional_email_is_sent_again(smtp_sink, siti, cart_template):
    from datetime import timedelta

    from django.utils import timezone

    cart_template.purpose = "transactional"
    cart_template.save()
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="k-tx")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENDING, claim="dead",
                                                 claimed_at=timezone.now() - timedelta(hours=1))
    messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT and len(smtp_sink.messages) == 1
    assert "List-Unsubscribe" not in smtp_sink.messages[0]  # transactional mail carries no list headers


def test_a_refused_recipient_fails_permanently_and_a_down_server_defers(smtp_sink, siti, cart_template, settings):
    smtp_sink.refuse.add("siti@pelanggan.my")
    message = _send(siti, cart_template, key="k-550")
    assert message.status == MessageStatus.FAILED and "refused" in message.error
    smtp_sink.refuse.clear()
    settings.EMAIL_PORT = 1  # nothing listens there
    message = _send(siti, cart_template, key="k-down")
    assert message.status == MessageStatus.DEFERRED and message.defer_until is not None
    assert "SMTP" in message.error
    assert smtp_sink.messages == []


def test_click_redirects_only_to_links_in_the_message_and_records_the_click(client, smtp_sink, siti, cart_template):
    message = _send(siti, cart_template)
    response = client.get(reverse("channels:click", args=[_token(message, 0)]))
    assert response.status_code == 302 and response["Location"] == message.links[0]
    message.refresh_from_db()
    assert message.status == MessageStatus.CLICKED and message.clicked_at
    click = Event.objects.get(contact=siti, type="email_clicked")
    assert click.properties["url"] == message.links[0]
    # Tampered token, a link index the message does not have, a made-up target: never redirected.
    good = _token(message, 0)
    assert client.get(reverse("channels:click", args=[good[:-2] + "xx"])).status_code == 404
    assert client.get(reverse("channels:click", args=[_token(message, 7)])).status_code == 404
    assert client.get("/c/https%3A%2F%2Fevil.example").status_code == 404
    # A second click does not make a second event.
    client.get(reverse("channels:click", args=[good]))
    assert Event.objects.filter(contact=siti, type="email_clicked").count() == 1


def _token(message, index):
    return tracking.click_url(message.pk, index).rsplit("/c/", 1)[1]


def test_the_open_pixel_records_an_open(client, smtp_sink, siti, cart_template):
    message = _send(siti, cart_template)
    token = tracking.open_url(message.pk).rsplit("/o/", 1)[1][: -len(".gif")]
    response = client.get(reverse("channels:open", args=[token]))
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    message.refresh_from_db()
    assert message.status == MessageStatus.OPENED
    assert Event.objects.filter(contact=siti, type="email_opened").count() == 1
    assert client.get(reverse("channels:open", args=["forged"])).status_code == 200  # no oracle, no change


def test_a_claim_left_by_a_dead_process_is_taken_over_at_once(smtp_sink, siti, cart_template):
    """A redelivered task must not wait for the timeout when the claimer is known to be gone."""
    import subprocess

    from django.utils import timezone

    from channels.services import HOST

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="k-orphan")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.CLAIMED, claim=f"{HOST}:{gone.pid}:abc",
                                                 claimed_at=timezone.now())
    messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT and len(smtp_sink.messages) == 1


def test_a_claim_held_by_a_live_process_is_left_alone(smtp_sink, siti, cart_template):
    import os

    from django.utils import timezone

    from channels.services import HOST

    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="k-live")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.CLAIMED, claim=f"{HOST}:{os.getppid()}:abc",
                                                 claimed_at=timezone.now())
    messages_send([message.pk])
    message.refresh_from_db()
    assert message.status == MessageStatus.CLAIMED and smtp_sink.messages == []


def test_two_marketing_emails_to_one_person_in_one_batch_meet_the_daily_cap(smtp_sink, siti, cart_template):
    first, _ = message_create(contact=siti, template=cart_template, idempotency_key="cap-1")
    second, _ = message_create(contact=siti, template=cart_template, idempotency_key="cap-2")
    counts = messages_send([first.pk, second.pk])
    first.refresh_from_db()
    second.refresh_from_db()
    assert counts == {"sent": 1, "deferred": 1}
    assert first.status == MessageStatus.SENT and second.status == MessageStatus.DEFERRED
    assert second.gate_reason == "frequency_cap" and second.defer_until is not None
    assert len(smtp_sink.messages) == 1


def test_every_message_of_a_batch_ends_sent_with_its_send_log(smtp_sink, shop, catalog, cart_template):
    from compliance.models import SendLog
    from segments.models import Contact
    from tests.channels.conftest import subscribe

    ids = []
    for i in range(5):
        c = Contact.objects.create(email=f"batch{i}@pelanggan.my", first_name=f"B{i}")
        subscribe(c)
        ids.append(message_create(contact=c, template=cart_template, idempotency_key=f"batch-{i}")[0].pk)
    assert messages_send(ids) == {"sent": 5}
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    assert SendLog.objects.filter(outcome="sent").count() == 5 and len(smtp_sink.messages) == 5


@pytest.mark.parametrize("channel_mix", ["email", "email+sms"])
def test_a_batch_reads_the_same_few_things_whatever_its_size(smtp_sink, shop, catalog, channel_mix):
    """No per-message SELECT (a column the batch load defers and a send then reads would be one)
    for a campaign whose template reads only the contact's own fields and shared blocks."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench.b4_send import HTML
    from channels.models import Template
    from channels.rendering import best_sellers
    from segments.models import Contact
    from tests.channels.conftest import subscribe

    promo = Template.objects.create(name="promo", channel="email", purpose="marketing", preheader="New this week",
                                    subject="{{ contact.first_name }}, this week's best sellers", html_body=HTML)
    best_sellers()  # cached per process: read before either batch
    sms = Template.objects.create(name="sms-promo", channel="sms", purpose="transactional", sms_body="Hi {{ contact.first_name }}")

    def selects(n: int, tag: str) -> int:
        ids = []
        for i in range(n):
            c = Contact.objects.create(email=f"{tag}{i}@pelanggan.my", first_name=f"B{i}", phone=f"+6012345{n:02d}{i:03d}")
            subscribe(c)
            ids.append(message_create(contact=c, template=promo, idempotency_key=f"{tag}-{i}")[0].pk)
            if channel_mix != "email":
                ids.append(message_create(contact=c, template=sms, idempotency_key=f"{tag}-sms-{i}")[0].pk)
        with CaptureQueriesContext(connection) as queries:
            counts = messages_send(ids)
        assert counts.get("sent") == len(ids), counts
        return sum(1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT"))

    selects(1, "warm")  # per-process caches (best sellers, SMS prices) filled
    assert selects(2, "small") == selects(9, "large")


def test_postgresql_counts_open_messages_from_the_partial_index(db):
    from django.db import connection

    from channels.models import OPEN_STATUSES

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (SQLite cannot use a partial index with bound parameters)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'message_open_idx'")
        (definition,) = cursor.fetchone()
    assert all(f"'{s}'" in definition for s in OPEN_STATUSES)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # the test table is tiny: ask for an index
    plan = str(Message.objects.filter(pk__gte=1, pk__lte=10**6, status__in=OPEN_STATUSES).explain())
    assert "message_open_idx" in plan, plan
