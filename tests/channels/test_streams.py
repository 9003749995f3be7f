"""A batch's emails over two connections at once (CHANNELS["SEND_STREAMS"], PostgreSQL only):
every message once, each recorded with its send log, the counts of both streams in the result."""

import threading

import pytest

from channels import services
from channels.models import Message, MessageStatus
from channels.services import message_create, messages_send
from compliance.models import SendLog
from segments.models import Contact
from tests.channels.conftest import subscribe

pytestmark = pytest.mark.django_db(transaction=True)  # the second stream has its own connection


def _batch(template, n: int) -> list[int]:
    ids = []
    for i in range(n):
        c = Contact.objects.create(email=f"stream{i}@pelanggan.my", first_name=f"S{i}")
        subscribe(c)
        ids.append(message_create(contact=c, template=template, idempotency_key=f"stream-{i}")[0].pk)
    return ids


def test_two_streams_send_every_message_once(smtp_sink, shop, catalog, cart_template, settings, monkeypatch):
    from django.db import connection

    settings.CHANNELS = {**settings.CHANNELS, "SEND_STREAMS": 2}
    ids = _batch(cart_template, 2 * services.MIN_PER_STREAM + 3)
    threads = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (threads.append(self.name), start(self))[1])
    assert messages_send(ids) == {"sent": len(ids)}
    assert threads == (["email-stream"] if connection.vendor == "postgresql" else [])
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    assert SendLog.objects.filter(outcome="sent").count() == len(ids)
    assert sorted(m["Message-ID"] for m in smtp_sink.messages) == sorted(
        Message.objects.values_list("provider_message_id", flat=True))


def test_a_stream_that_fails_fails_the_batch_after_the_other_one_finished(
        smtp_sink, shop, catalog, cart_template, settings, monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("one stream on SQLite")
    settings.CHANNELS = {**settings.CHANNELS, "SEND_STREAMS": 2}
    ids = _batch(cart_template, 2 * services.MIN_PER_STREAM)
    deliver = services._deliver_stream

    def failing_in_thread(items, ledger):
        if threading.current_thread().name == "email-stream":
            raise RuntimeError("boom")
        return deliver(items, ledger)

    monkeypatch.setattr(services, "_deliver_stream", failing_in_thread)
    with pytest.raises(RuntimeError, match="boom"):
        messages_send(ids)
    sent = Message.objects.filter(status=MessageStatus.SENT).count()
    assert sent == services.MIN_PER_STREAM == len(smtp_sink.messages)
    assert Message.objects.filter(status=MessageStatus.CLAIMED).count() == len(ids) - sent
