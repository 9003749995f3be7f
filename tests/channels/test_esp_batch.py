"""anymail batch sending (merge_data) through anymail's real Mailgun backend to a local Mailgun API.

The HTTP endpoint is bench/fake_esp.py, a real server on 127.0.0.1 that parses the request the
way Mailgun documents it and expands the batch per recipient; nothing is mocked.
"""

import json
import socket

import pytest

from bench.fake_esp import State, serve
from channels.models import Message, MessageStatus
from channels.services import message_create, messages_send
from compliance import messaging
from compliance import services as compliance
from compliance.models import SendLog
from segments.models import Contact, Event
from tests.channels.conftest import signed_links, subscribe
from tests.channels.mailgun import post_mailgun

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["anymail.backends.mailgun.EmailBackend", "channels.esp_backends.MailgunBackend"])
def mailgun(request, settings):
    """A local Mailgun API, sent to by anymail's Mailgun backend (urlencoded) and by ours (multipart)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = State(keep=True)
    server = serve(port, state)
    settings.EMAIL_BACKEND = request.param
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_KEY": "key-for-tests",
                        "MAILGUN_API_URL": f"http://127.0.0.1:{port}/v3", "REQUESTS_TIMEOUT": 5}
    yield state
    server.shutdown()


@pytest.fixture
def people(shop, catalog):
    made = []
    for i, name in enumerate(["Siti", "Aiman", "Mei Ling", "Ravi"]):
        c = Contact.objects.create(email=f"p{i}@pelanggan.my", first_name=name, locale="en")
        subscribe(c)
        made.append(c)
    return made


def _messages(people, template, prefix="batch"):
    return [message_create(contact=c, template=template, idempotency_key=f"{prefix}-{c.pk}",
                           origin="campaign:7")[0] for c in people]


def test_one_api_call_carries_every_recipients_own_email(mailgun, people, cart_template):
    compliance.unsubscribe(contact=people[3], channel="email", source="one_click")
    messages = _messages(people, cart_template)
    counts = messages_send([m.pk for m in messages])
    assert counts == {"sent": 3, "refused": 1}  # the gate still decides per recipient
    assert mailgun.requests == 1 and mailgun.count == 3 and mailgun.bad == 0
    by_address = {m["to"]: m for m in mailgun.messages}
    assert set(by_address) == {"p0@pelanggan.my", "p1@pelanggan.my", "p2@pelanggan.my"}
    for message, contact in zip(messages[:3], people[:3], strict=True):
        message.refresh_from_db()
        got = by_address[contact.email]
        # Each recipient gets the email rendered for them: subject, body, own links and headers.
        assert got["subject"] == f"{contact.first_name}, your cart is waiting"
        assert f"Hi {contact.first_name}" in got["html"] and "<style" not in got["html"]
        assert signed_links(got["text"]) == {"unsubscribe": {contact.pk}, "preferences": {contact.pk}}
        assert signed_links(got["headers"]["List-Unsubscribe"])["unsubscribe"] == {contact.pk}
        assert got["headers"]["List-Unsubscribe"].startswith(f"<{messaging.unsubscribe_url(contact).split('/u/')[0]}/u/")
        assert got["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert got["variables"]["message_id"] == str(message.pk)  # comes back in Mailgun's webhooks
        assert message.status == MessageStatus.SENT and message.provider == "mailgun"
        assert message.provider_message_id.startswith("<") and message.sent_at
        assert SendLog.objects.filter(message_key=message.idempotency_key, outcome="sent").count() == 1
        assert Event.objects.filter(type="email_sent", properties__message=str(message.pk)).count() == 1
    messages_send([m.pk for m in messages])  # a redelivered task sends nothing again
    assert mailgun.count == 3


def test_an_esp_server_error_defers_the_batch_and_a_client_error_fails_it(mailgun, people, cart_template):
    mailgun.reply_with = (503, {"message": "try later"})
    first = _messages(people[:2], cart_template, "e503")
    assert messages_send([m.pk for m in first]) == {"deferred": 2}
    assert set(Message.objects.filter(pk__in=[m.pk for m in first]).values_list("status", flat=True)) == {"deferred"}
    mailgun.reply_with = (400, {"message": "'from' parameter is not a valid address"})
    second = _messages(people[2:], cart_template, "e400")
    assert messages_send([m.pk for m in second]) == {"failed": 2}
    assert mailgun.count == 0 and not SendLog.objects.filter(outcome="sent").exists()


def test_an_unanswered_call_is_never_resent_and_mailguns_webhooks_settle_it(mailgun, people, cart_template,
                                                                              webhook_client, settings):
    """The ESP took the batch but the answer never came (read timeout): the messages are
    `unknown`, not re-sent; Mailgun's delivered webhooks, carrying each Message id in
    user-variables, then record them as sent and delivered."""
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    mailgun.delay = 1.0
    messages = _messages(people[:3], cart_template, "timeout")
    assert messages_send([m.pk for m in messages]) == {"unknown": 3}
    assert mailgun.count == 3
    messages_send([m.pk for m in messages])
    assert mailgun.count == 3  # never sent twice
    assert not SendLog.objects.filter(outcome="sent").exists()
    for got in mailgun.messages:
        response = post_mailgun(webhook_client, event="delivered", recipient=got["to"],
                                message_id="20261122.1@kedai.example", user_variables=got["variables"])
        assert response.status_code == 200
    for message in messages:
        message.refresh_from_db()
        assert message.status == MessageStatus.DELIVERED and message.sent_at and message.delivered_at
    assert SendLog.objects.filter(outcome="sent").count() == 3
    # A replayed webhook changes nothing.
    got = mailgun.messages[0]
    post_mailgun(webhook_client, event="delivered", recipient=got["to"], message_id="20261122.1@kedai.example",
                 user_variables=got["variables"])
    assert SendLog.objects.filter(outcome="sent").count() == 3


def test_the_batch_request_is_what_mailgun_documents(mailgun, people, cart_template):
    """recipient-variables keyed by address; body fields are Mailgun's %recipient.KEY% merge fields."""
    import requests

    seen = {}
    original = requests.Session.request

    def spy(self, method, url, **kwargs):
        seen.update(kwargs.get("data") or {})
        seen.update({name: value for name, (_filename, value) in kwargs.get("files") or []})
        return original(self, method, url, **kwargs)

    requests.Session.request = spy
    try:
        messages_send([m.pk for m in _messages(people[:2], cart_template, "shape")])
    finally:
        requests.Session.request = original
    assert seen["subject"] == "%recipient.subject%" and seen["html"] == "%recipient.html%"
    assert seen["text"] == "%recipient.text%"
    assert set(json.loads(seen["recipient-variables"])) == {"p0@pelanggan.my", "p1@pelanggan.my"}


@pytest.mark.django_db(transaction=True)
def test_esp_batch_sending_is_not_split_into_streams(mailgun, shop, catalog, cart_template, settings):
    """Streams overlap one-message exchanges (SMTP); an ESP batch call already carries the whole batch."""
    from channels import services

    settings.CHANNELS = {**settings.CHANNELS, "SEND_STREAMS": 2}
    contacts = []
    for i in range(2 * services.MIN_PER_STREAM + 2):
        c = Contact.objects.create(email=f"s{i}@pelanggan.my", first_name=f"S{i}", locale="en")
        subscribe(c)
        contacts.append(c)
    messages = _messages(contacts, cart_template, prefix="streams")
    assert messages_send([m.pk for m in messages]) == {"sent": len(contacts)}
    assert mailgun.requests == 1 and mailgun.count == len(contacts)
