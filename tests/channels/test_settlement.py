"""A worker SIGKILLed mid-send (COMPLIANCE.md B13): never a duplicate, and nothing the server
took goes missing once the provider's record arrives.

The sender runs in a child process against the test database and a real SMTP server, and kills
itself at each checkpoint; then the next attempt runs as the broker's redelivery would.
"""

import os
import subprocess
import sys
import time

import pytest

from channels.models import Message, MessageStatus
from channels.services import message_create, messages_reconcile, messages_send
from compliance.models import SendLog
from tests.channels.mailgun import post_mailgun
from tests.qcluster import ROOT
from tests.qcluster import test_database_url as database_url

pytestmark = pytest.mark.django_db(transaction=True)


def _killed_at(checkpoint: str, message: Message, sink) -> None:
    from django.db import connection

    env = {**os.environ, "DATABASE_URL": database_url(), "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
           "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(sink.port)}
    env.pop("PYTEST_VERSION", None)
    connection.close()
    proc = subprocess.run([sys.executable, "-m", "tests.channels.killed_sender", checkpoint, str(message.pk)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-3000:]
    time.sleep(0.3)  # the server notices the dropped connection


def _status(message) -> str:
    message.refresh_from_db()
    return message.status


def test_killed_before_the_sending_commit_the_message_goes_out_once_later(smtp_sink, siti, cart_template):
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-1")
    _killed_at("before-sending", message, smtp_sink)
    assert _status(message) == MessageStatus.CLAIMED
    assert smtp_sink.messages == []  # the half-sent DATA was dropped with the connection
    messages_send([message.pk])  # the redelivered task: the dead claim is taken over at once
    assert _status(message) == MessageStatus.SENT and len(smtp_sink.messages) == 1


def test_killed_after_the_servers_250_the_message_is_settled_by_the_providers_record(
        smtp_sink, siti, cart_template, webhook_client):
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-2")
    _killed_at("after-accepted", message, smtp_sink)
    assert _status(message) == MessageStatus.SENDING and len(smtp_sink.messages) == 1
    messages_send([message.pk])
    assert _status(message) == MessageStatus.UNKNOWN and len(smtp_sink.messages) == 1  # not sent again
    assert not SendLog.objects.filter(outcome="sent").exists()
    # The relay's delivered webhook names the message by its Message-ID header.
    received = smtp_sink.messages[0]
    assert received["Message-ID"] == message.provider_message_id
    response = post_mailgun(webhook_client, event="delivered", recipient="siti@pelanggan.my",
                            message_id=received["Message-ID"])
    assert response.status_code == 200
    assert _status(message) == MessageStatus.DELIVERED and message.sent_at
    assert SendLog.objects.filter(outcome="sent", message_key="kill-2").count() == 1
    messages_send([message.pk])
    assert len(smtp_sink.messages) == 1


def test_killed_between_the_commit_and_the_final_dot_is_the_one_unknowable_case(smtp_sink, siti, cart_template):
    """The bound for plain SMTP without a provider look-up (messages_reconcile): the server never
    got the message, and nothing else can prove that, so it stays `unknown` (missing) rather than
    risk a duplicate. The window is one write()."""
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-3")
    _killed_at("after-sending", message, smtp_sink)
    assert _status(message) == MessageStatus.SENDING and smtp_sink.messages == []
    messages_send([message.pk])
    assert _status(message) == MessageStatus.UNKNOWN and smtp_sink.messages == []


def test_a_final_absent_from_the_providers_lookup_sends_an_unknown_message_once(smtp_sink, siti, cart_template):
    """Where the provider can say for certain it never took a message (messages_reconcile), the
    message a kill after the `sending` commit left `unknown` goes out after all, once."""
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-5")
    _killed_at("after-sending", message, smtp_sink)
    messages_send([message.pk])
    assert _status(message) == MessageStatus.UNKNOWN and smtp_sink.messages == []
    asked = []

    def lookup(ids, gone_since):
        asked.append((ids, gone_since))
        return {i: "absent" for i in ids}

    assert messages_reconcile(lookup=lookup) == [message.pk]
    assert asked[0][0] == [message.provider_message_id] and asked[0][1] is not None
    assert _status(message) == MessageStatus.QUEUED
    assert messages_reconcile(lookup=lookup) == []  # nothing unknown any more: asked for nothing
    messages_send([message.pk])
    assert _status(message) == MessageStatus.SENT and len(smtp_sink.messages) == 1
    assert smtp_sink.messages[0]["Message-ID"] == message.provider_message_id


def test_the_providers_lookup_settles_what_it_took_and_leaves_what_it_cannot_tell(siti, cart_template):
    taken, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-6")
    unsure, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-7")
    for m in (taken, unsure):
        Message.objects.filter(pk=m.pk).update(status=MessageStatus.UNKNOWN, provider_message_id=f"<m{m.pk}@x>")
    answers = {f"<m{taken.pk}@x>": "accepted", f"<m{unsure.pk}@x>": "pending"}
    assert messages_reconcile(lookup=lambda ids, gone_since: {i: answers[i] for i in ids}) == []
    assert _status(taken) == MessageStatus.SENT and _status(unsure) == MessageStatus.UNKNOWN
    assert SendLog.objects.filter(outcome="sent", message_key="kill-6").count() == 1


def test_a_provider_refusal_fails_an_unsettled_message(smtp_sink, siti, cart_template, webhook_client):
    message, _ = message_create(contact=siti, template=cart_template, idempotency_key="kill-4")
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.UNKNOWN)
    post_mailgun(webhook_client, event="rejected", recipient="siti@pelanggan.my", message_id="x@y",
                 user_variables={"message_id": str(message.pk)})
    assert _status(message) == MessageStatus.FAILED
    assert not SendLog.objects.filter(outcome="sent").exists()
